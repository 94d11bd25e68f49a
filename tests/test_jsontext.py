"""``server.core.jsontext``: orjson's speed with the standard library's answers."""

from __future__ import annotations

import json

import pytest

from server.core import jsontext


@pytest.mark.parametrize(
    "value",
    [
        {"task_id": "abc", "n": 3, "ok": True, "none": None, "f": 0.5, "list": [1, "x", {}]},
        {"prompt": "雨の夜 – neon “market” \u00e9"},
        {"big": 2**70},  # past orjson's 64 bits: the standard encoder takes over
        {1: "non-string key"},  # orjson refuses it: the standard encoder takes over
    ],
)
def test_dumps_is_compact_json_that_reads_back_equal(value):
    text = jsontext.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert json.loads(text) == json.loads(json.dumps(value))


def test_dumps_keeps_non_ascii_as_is():
    assert jsontext.dumps({"s": "é"}) == '{"s":"é"}'


@pytest.mark.parametrize(
    "text",
    [
        '{"a": [1, 2.5, "x", null, true]}',
        '{"lone": "\\ud800"}',  # orjson refuses lone surrogates; json reads them
        '{"big": 123456789012345678901234567890}',  # beyond 64 bits: orjson says float
        "-9223372036854775809",  # just below 64 bits signed
        "18446744073709551616",  # just above 64 bits unsigned
        "[1e400, -1e400]",  # orjson refuses infinities; json reads them
        "NaN",
        '{"a": 1, "a": 2}',
    ],
)
def test_loads_gives_what_json_loads_gives(text):
    assert repr(jsontext.loads(text)) == repr(json.loads(text))


def test_loads_reads_bytes_too():
    assert jsontext.loads(b'{"n": 123456789012345678901234567890}') == {
        "n": 123456789012345678901234567890
    }


def test_loads_raises_what_json_loads_raises():
    with pytest.raises(json.JSONDecodeError) as caught:
        jsontext.loads('{"a": ')
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads('{"a": ')
    assert (caught.value.msg, caught.value.pos) == (expected.value.msg, expected.value.pos)


def test_loads_passes_options_to_the_standard_path():
    def refuse(name):
        raise ValueError(f"refused {name}")

    with pytest.raises(ValueError, match="refused NaN"):
        jsontext.loads('{"x": NaN}', parse_constant=refuse)
