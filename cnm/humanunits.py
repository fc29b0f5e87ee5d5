"""Docker's go-units, for the tables the CLI and the API print: one copy, exact.

HumanDuration truncates minutes but rounds hours (int(d.Hours() + 0.5)), so that
"Up 90 minutes" reads "About 2 hours" rather than "1 hour"; years are truncated again.
"""

from __future__ import annotations


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: "Less than a second", "About an hour", "3 days"."""
    secs = int(seconds)
    if secs < 1:
        return "Less than a second"
    if secs == 1:
        return "1 second"
    if secs < 60:
        return f"{secs} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def duration_changes_at(seconds: float) -> float:
    """The elapsed time before which human_duration's text for `seconds` stays the
    same (listings keep a text until then instead of rendering it again)."""
    if seconds < 60:
        return int(max(0.0, seconds)) + 1
    if seconds < 3600:
        return (int(seconds / 60) + 1) * 60
    hours = int(seconds / 3600 + 0.5)  # days, weeks and months follow from it
    edge = (hours + 0.5) * 3600
    if hours >= 24 * 365 * 2:
        edge = min(edge, (int(seconds / 3600) // (24 * 365) + 1) * 24 * 365 * 3600)
    return edge


def human_size(size: float) -> str:
    """go-units HumanSizeWithPrecision(size, 3): decimal units, 3 significant digits."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    while size >= 1000 and i < len(units) - 1:
        size /= 1000.0
        i += 1
    return f"{size:.3g}{units[i]}"
