"""The JSON fast paths of the ingest path read and write what `json` does, errors included:
`attributes.loads` (the C scanner without `json.loads`'s wrapping) and `writes._dumps` (one
C encoder per thread for the insert's JSON columns)."""

from __future__ import annotations

import json

import pytest

from observatory_core.ingest.attributes import as_list, as_object, loads
from observatory_core.storage.clickhouse import writes

TEXTS = [
    '[{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]',
    " [1, 2]",  # leading space: json.loads's path
    "[1] \n\t",
    "[1]x",  # extra data
    "[1] x",
    "",
    "\ufeff[1]",  # a BOM: json.loads refuses it
    '{"a": 1, "a": 2}',
    '"text"',
    "1e400",
    "NaN",
    "[1,]",
    "[1]\x0b",  # not JSON's space
    '{"big": 123456789012345678901234567890}',
    "[" * 5000 + "]" * 5000,  # too deep: RecursionError, as json.loads raises
]


def _outcome(call, value):
    try:
        return ("value", call(value))
    except RecursionError:
        return ("too deep",)
    except ValueError as exc:
        return ("error", type(exc), str(exc))


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_loads_reads_and_refuses_as_json_loads(text):
    assert _outcome(loads, text) == _outcome(json.loads, text)


def test_lists_and_objects_from_text_as_before():
    assert as_list('["stop"]') == ["stop"]
    assert as_list("[1]x") == ["[1]x"]  # not JSON: the text itself
    assert as_list('{"a": 1}') == ['{"a": 1}']  # JSON, not a list
    assert as_object('{"a": [1]}') == {"a": [1]}
    assert as_object("[1]") is None and as_object("{") is None


VALUES = [
    {},
    {"a": [1, 2.5, None, True, "x\u00e9"], "b": {"c": 1e300}},
    {"n": float("nan"), "i": float("inf")},
    {"k": 10**30, "nested": [[{"deep": "\x00"}]]},
    "text",
    [],
]


def test_dumps_writes_as_the_encoder():
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
    for value in VALUES:
        assert writes._dumps(value) == encoder.encode(value)


def test_dumps_after_a_failure_writes_the_next_value_right():
    """After a failed encoding the next values are written as the encoder writes them, and
    the error is the encoder's."""
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
    cycle: dict = {}
    cycle["self"] = cycle
    for bad, error in ((cycle, ValueError), ({"x": [{"y": object()}]}, TypeError)):
        with pytest.raises(error) as ours:
            writes._dumps(bad)
        with pytest.raises(error) as theirs:
            encoder.encode(bad)
        assert str(ours.value) == str(theirs.value)
        for value in VALUES:
            assert writes._dumps(value) == encoder.encode(value)


def test_a_container_of_a_failed_value_is_written_next():
    """A failed encoding leaves the encoder holding the failed value's containers as seen
    (its check for cycles): one of them written next would be refused as a circular
    reference, unless the encoder is made anew (as `_dumps` does after a failure)."""
    inner: list = [object()]
    with pytest.raises(TypeError):
        writes._dumps({"a": inner})
    inner[0] = 1
    assert writes._dumps(inner) == "[1]"
