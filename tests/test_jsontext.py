"""``server.core.jsontext``: orjson's speed, the standard library's text."""

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
