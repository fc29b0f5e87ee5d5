"""Numbers from text, strictly, for the API's request parsing and the CLI alike.

Python's int() and float() are generous where a daemon must not be: int() takes
Arabic-Indic and full-width digits ("١٢", "１２"), underscores ("1_000") and spaces
(" 12 "); float() also takes "nan", "inf" and "1e400" (infinity). Docker's Go parsers
take none of these. Here: ASCII digits only, an optional sign where negatives make
sense, a bounded length (int() refuses more than 4,300 digits with a ValueError that
would otherwise surface as a 500), and decimals without exponents.

Pure and light (no re): the CLI's execution path imports it. Errors are ValueError with
a short reason; callers add which field or flag it was.
"""

from __future__ import annotations

MAX_DIGITS = 24  # any bound we check is far below 10**24


def is_ascii_digits(text: str) -> bool:
    """Non-empty and only 0-9 (str.isdigit() also says yes to '²' and '١')."""
    return bool(text) and text.isascii() and text.isdigit()


def parse_int(text: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer written in ASCII digits, with a leading '-' only when `lo` allows
    negatives; within [lo, hi] where given."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an integer")
    digits = text[1:] if text.startswith("-") and (lo is None or lo < 0) else text
    if not is_ascii_digits(digits):
        raise ValueError(f"{text!r} is not an integer")
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"{text[:12]}… is too large")
    n = int(text)
    _check_range(n, lo, hi)
    return n


def parse_decimal(text: str, lo: float | None = None, hi: float | None = None) -> float:
    """A non-negative decimal like "1.5" or "2" (no sign, exponent, NaN or infinity);
    within [lo, hi] where given."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a number")
    whole, dot, frac = text.partition(".")
    if not (is_ascii_digits(whole) or (dot and whole == "" and frac)) or (dot and not is_ascii_digits(frac)):
        raise ValueError(f"{text!r} is not a number")
    if len(whole) > MAX_DIGITS or len(frac) > MAX_DIGITS:
        raise ValueError(f"{text[:12]}… is too long")
    x = float(text)
    _check_range(x, lo, hi)
    return x


def _check_range(x: float, lo: float | None, hi: float | None) -> None:
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        if lo is not None and hi is not None:
            raise ValueError(f"{x:g} is not between {lo:g} and {hi:g}")
        raise ValueError(
            f"{x:g} is not {'at least ' + format(lo, 'g') if lo is not None else 'at most ' + format(hi, 'g')}"
        )


_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """Docker's sizes: 67108864, 64m, 1.5g, 512k, 64mb (b, k, m, g, t; any case)."""
    t = text.strip().lower() if isinstance(text, str) else ""
    if len(t) > 2 and t.endswith("b") and t[-2] in _UNITS:
        t = t[:-1]
    unit = _UNITS.get(t[-1:], 0) if t[-1:].isalpha() else 1
    try:
        amount = parse_decimal(t[:-1] if t[-1:].isalpha() else t)
    except ValueError:
        unit = 0
    if not unit:
        raise ValueError(f"{text!r} is not a size (e.g. 64m, 1g, 67108864)")
    return int(amount * unit)
