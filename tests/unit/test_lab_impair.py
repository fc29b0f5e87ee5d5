"""Impairments rendered as tc/nft commands (pure), and how their application fails."""

from __future__ import annotations

import pytest

from cnm.errors import InvalidParameter, Unavailable
from cnm.lab import impair as imp
from cnm.lab.runner import RecordingRunner, Result


def _cmds(**kw):
    return imp.commands("lab-x-h1", "lab-x-sw", "h1", imp.Impairment(**kw), 1500)


def test_rate_is_tbf_on_both_ends_and_loss_is_an_nft_table():
    cmds = _cmds(rate="10mbit", loss=5)
    tc = [c for c in cmds if c.argv[0] == "tc"]
    assert {(c.netns, c.argv[4]) for c in tc} == {("lab-x-h1", "ul0"), ("lab-x-sw", "p-h1")}
    for c in tc:
        assert c.argv == (
            "tc",
            "qdisc",
            "replace",
            "dev",
            c.argv[4],
            "root",
            "tbf",
            "rate",
            "10mbit",
            "burst",
            "12500",
            "latency",
            "50ms",
        )
    nft = cmds[-1]
    assert nft.netns == "lab-x-h1" and nft.argv == ("nft", "-f", "-")
    assert nft.input == (
        "table netdev lab_impair\n"
        "delete table netdev lab_impair\n"
        "table netdev lab_impair {\n"
        "\tchain ingress {\n"
        '\t\ttype filter hook ingress device "ul0" priority 0; policy accept;\n'
        "\t\tnumgen random mod 10000 < 500 counter drop\n"
        "\t}\n"
        "\tchain egress {\n"
        '\t\ttype filter hook egress device "ul0" priority 0; policy accept;\n'
        "\t\tnumgen random mod 10000 < 500 counter drop\n"
        "\t}\n"
        "}\n"
    )


def test_fractional_loss_and_small_rate_burst():
    assert "numgen random mod 10000 < 25 counter drop" in imp.nft_script("ul0", 0.25)
    assert imp.tbf_burst("64kbit", 1500) == 3 * 1514  # at least three full frames
    assert imp.tbf_burst("1gbit", 1500) == 1_250_000  # 10 ms at the rate


def test_clear_deletes_qdiscs_tolerantly_and_removes_the_table_only():
    cmds = _cmds()
    tc = [c for c in cmds if c.argv[0] == "tc"]
    assert all(c.argv[2] == "del" and c.tolerate for c in tc)
    assert cmds[-1].input == "table netdev lab_impair\ndelete table netdev lab_impair\n"


def test_delay_uses_netem_first_carrying_the_rate():
    cmds = _cmds(delay=20, rate="5mbit")
    assert cmds[0].netem and cmds[1].netem
    assert cmds[0].argv[5:] == ("root", "netem", "delay", "20ms", "rate", "5mbit")


def test_missing_netem_is_a_clear_error_before_any_change():
    def respond(argv, netns):
        if "netem" in argv:
            return Result(argv, 2, "", "Error: Specified qdisc kind is unknown.\n")
        return None

    runner = RecordingRunner(respond)
    with pytest.raises(Unavailable) as info:
        imp.apply(runner, _cmds(delay=10, loss=3))
    assert str(info.value) == imp.NETEM_MISSING
    assert len(runner.calls) == 1  # nothing else was changed


def test_other_failures_name_the_command_and_tolerated_ones_pass():
    runner = RecordingRunner(
        lambda argv, ns: (
            Result(argv, 1, "", "Error: boom\n")
            if argv[0] == "nft"
            else Result(argv, 2, "", "Error: Cannot delete qdisc with handle of zero.\n")
        )
    )
    with pytest.raises(Unavailable, match=r"nft -f - in lab-x-h1 failed \(1\): Error: boom"):
        imp.apply(runner, _cmds())
    assert [c[1][0] for c in runner.calls] == ["tc", "tc", "nft"]


def test_merge_validate_and_describe():
    cur = imp.Impairment(rate="10mbit", loss=2)
    assert cur.merged(None, None, None) == cur
    assert cur.merged("0", None, 15) == imp.Impairment(loss=2, delay=15)
    assert cur.merged(None, 0, None) == imp.Impairment(rate="10mbit")
    assert imp.Impairment.from_json(cur.to_json()) == cur
    assert cur.describe() == "rate 10mbit, loss 2%" and imp.Impairment().describe() == "none"
    imp.validate("1gbit", 0.5, 10)
    for bad in (("fast", None, None), ("1bit", None, None), (None, 120.0, None), (None, None, -1.0)):
        with pytest.raises(InvalidParameter):
            imp.validate(*bad)


def test_netem_missing_detection():
    assert imp.netem_missing("Error: Specified qdisc kind is unknown.")
    assert not imp.netem_missing("Error: Exclusivity flag on, cannot modify.")
