"""site-packages on demand, for `net` started without site (`python -I -S`, see
cnm.cli.launcher): the first import that nothing on sys.path provides runs site.main()
(site-packages, .pth files) and is looked up again.

The everyday commands import only the standard library and cnm, so they never pay
for site (~3 ms a call here); help (click), the daemon and labs load it when they reach
their first third-party import."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType


class SiteOnDemand:
    """The last finder on sys.meta_path while site has not run."""

    @classmethod
    def find_spec(
        cls, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is not None:  # a submodule: its package's own path was searched
            return None
        sys.meta_path.remove(cls)  # (before site.main(): it imports, too)
        import site  # (site runs only when a module from site-packages is asked for: the point of this finder)

        site.main()
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, None, target) if find is not None else None
            if spec is not None:
                return spec
        return None


def install() -> None:
    """Add the finder if this interpreter started without site (-S)."""
    if "site" not in sys.modules and SiteOnDemand not in sys.meta_path:
        sys.meta_path.append(SiteOnDemand)
