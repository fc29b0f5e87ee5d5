"""`python -m cnm.cli …`: the `net` CLI with the interpreter's usual start-up."""

from cnm.cli.entry import main

main()
