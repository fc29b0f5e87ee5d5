"""JSON for the CLI's path, on the json package's C accelerator (`_json`) alone.

`import json` costs every `net` call ~8 ms here: json.decoder and json.scanner compile
regular expressions at import (re, enum, functools). The C scanner and encoder behind
them need none of that, so this module drives them directly:

    loads(text or bytes)  == json.loads(...)
    dumps(obj)            == json.dumps(obj)                 (compact request bodies)
    dumps(obj, indent=4)  == json.dumps(obj, indent=4)       (what the CLI prints)
    dumps(text, ascii=False) == json.dumps(text, ensure_ascii=False)

The same text as json's, byte for byte (tests/unit/test_jsonlite.py checks it against
json on generated documents); malformed input raises json's JSONDecodeError (a
ValueError). Where `_json` is missing (another Python), the json package is used.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing stays off the CLI's execution path; type checkers see True
if TYPE_CHECKING:
    from typing import Any

_INF = float("inf")
_WHITESPACE = " \t\n\r"

try:
    from _json import encode_basestring as _str_utf8
    from _json import encode_basestring_ascii as _str_ascii
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner

    _ACCELERATED = True
except ImportError:  # pragma: no cover (CPython has _json)
    _ACCELERATED = False


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == _INF:
        return "Infinity"
    if value == -_INF:
        return "-Infinity"
    return float.__repr__(value)


class _Context:
    """What the C scanner reads from a json.JSONDecoder: json.loads's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": _INF, "-Infinity": -_INF}.__getitem__
    memo: dict = {}


def _unserializable(obj: Any) -> Any:
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


if _ACCELERATED:
    _scan = _make_scanner(_Context())  # type: ignore[arg-type]  # it reads what a JSONDecoder has
    _compact = _make_encoder({}, _unserializable, _str_ascii, None, ": ", ", ", False, False, True)


def _decode_error(message: str, doc: str, pos: int) -> ValueError:
    from json import JSONDecodeError  # only on bad input

    return JSONDecodeError(message, doc, pos)


def loads(data: str | bytes | bytearray) -> Any:
    """json.loads, for UTF-8 bytes or text."""
    if not _ACCELERATED:  # pragma: no cover
        import json  # (start-up: the json package only where the C accelerator is missing)

        return json.loads(data)
    text = (
        data.decode("utf-8-sig" if data[:3] == b"\xef\xbb\xbf" else "utf-8")
        if isinstance(data, (bytes, bytearray))
        else data
    )
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        obj, end = _scan(text, start)
    except StopIteration as exc:
        raise _decode_error("Expecting value", text, exc.value) from None
    if text[end:].strip(_WHITESPACE):
        raise _decode_error("Extra data", text, end + len(text[end:]) - len(text[end:].lstrip(_WHITESPACE)))
    return obj


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is True:
        return "true"
    if key is False:
        return "false"
    if key is None:
        return "null"
    if isinstance(key, int):
        return int.__repr__(key)
    if isinstance(key, float):
        return _float(key)
    raise TypeError(f"keys must be str, int, float, bool or None, not {key.__class__.__name__}")


def _indented(obj: Any, indent: str, level: int, out: list[str]) -> None:
    if isinstance(obj, str):
        out.append(_str_ascii(obj))
    elif obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        out.append(_float(obj))
    elif isinstance(obj, (list, tuple)):
        if not obj:
            out.append("[]")
            return
        inner = "\n" + indent * (level + 1)
        out.append("[")
        for i, item in enumerate(obj):
            out.append(inner if i == 0 else "," + inner)
            _indented(item, indent, level + 1, out)
        out.append("\n" + indent * level + "]")
    elif isinstance(obj, dict):
        if not obj:
            out.append("{}")
            return
        inner = "\n" + indent * (level + 1)
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            out.append((inner if i == 0 else "," + inner) + _str_ascii(_key(key)) + ": ")
            _indented(value, indent, level + 1, out)
        out.append("\n" + indent * level + "}")
    else:
        _unserializable(obj)


def dumps(obj: Any, indent: int | None = None, ascii: bool = True) -> str:
    """json.dumps(obj, indent=indent, ensure_ascii=ascii) (ascii=False: strings only)."""
    if not _ACCELERATED:  # pragma: no cover
        import json  # (start-up: the json package only where the C accelerator is missing)

        return json.dumps(obj, indent=indent, ensure_ascii=ascii)
    if not ascii:
        if not isinstance(obj, str):
            raise TypeError("dumps(..., ascii=False) takes a string")
        return _str_utf8(obj)
    if indent is None:
        return "".join(_compact(obj, 0))
    out: list[str] = []
    _indented(obj, " " * indent, 0, out)
    return "".join(out)
