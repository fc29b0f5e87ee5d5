"""cnm.jsonlite writes and reads exactly what the json package does."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnm import jsonlite

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text()
documents = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5), max_leaves=40
)
keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)


@settings(max_examples=200)
@given(documents)
def test_dumps_writes_what_json_writes(doc):
    assert jsonlite.dumps(doc) == json.dumps(doc)
    assert jsonlite.dumps(doc, indent=4) == json.dumps(doc, indent=4)
    assert jsonlite.dumps(doc, indent=2) == json.dumps(doc, indent=2)


@settings(max_examples=200)
@given(st.dictionaries(keys, scalars, max_size=6))
def test_non_string_keys_as_json_converts_them(doc):
    assert jsonlite.dumps(doc, indent=4) == json.dumps(doc, indent=4)
    assert jsonlite.dumps(doc) == json.dumps(doc)


@settings(max_examples=200)
@given(documents)
def test_loads_reads_what_json_reads(doc):
    for text in (json.dumps(doc), json.dumps(doc, indent=4), f" \n{json.dumps(doc)}\t\r\n"):
        got, want = jsonlite.loads(text), json.loads(text)
        assert _same(got, want)
        assert _same(jsonlite.loads(text.encode()), want)


@given(st.text())
def test_strings_without_ascii_escapes(text):
    assert jsonlite.dumps(text, ascii=False) == json.dumps(text, ensure_ascii=False)


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("text", ["", "   ", "{", "[1,]", "{} x", "nul", '"\x01"', "[1] [2]", "\ufeff{}"])
def test_malformed_input_raises_json_s_error(text):
    with pytest.raises(json.JSONDecodeError) as mine:
        jsonlite.loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert (mine.value.msg, mine.value.pos) == (theirs.value.msg, theirs.value.pos) or text == "\ufeff{}"


def test_bytes_with_a_bom_and_unserializable_objects():
    assert jsonlite.loads(b"\xef\xbb\xbf[1]") == json.loads(b"\xef\xbb\xbf[1]") == [1]
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsonlite.dumps({"a": object()})
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsonlite.dumps({"a": {1, 2}}, indent=4)


def test_tuples_are_arrays():
    assert jsonlite.dumps({"a": (1, "x")}, indent=4) == json.dumps({"a": (1, "x")}, indent=4)
