"""servers.common.jsonargs over generated inputs (hypothesis): every well-formed JSON object comes
back as sent, and anything else -- any text at all, other top-level types, NaN/Infinity, unknown
keys, numbers sent as strings -- is a BadArgument, never another exception."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servers.common.errors import BadArgument
from servers.common.jsonargs import StrictArgs, dumps, loads_object, parse_args

SETTINGS = settings(max_examples=60, deadline=None)

finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers(-(2 ** 53), 2 ** 53) | finite | st.text(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=4), max_leaves=20)
objects = st.dictionaries(st.text(max_size=12), values, max_size=6)


class Move(StrictArgs):
    """A model as the commands declare them: a name, a float and an int."""

    frame: str
    x: float
    count: int = 1


@SETTINGS
@given(objects)
def test_a_json_object_comes_back_as_sent(value: dict) -> None:
    assert loads_object(json.dumps(value)) == value


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_is_an_object_or_a_bad_argument(text: str) -> None:
    try:
        value = loads_object(text)
    except BadArgument as exc:
        assert str(exc)  # a sentence for the user
    else:
        assert isinstance(value, dict)


@SETTINGS
@given(st.lists(values, max_size=3) | scalars)
def test_other_top_level_values_are_refused(value: object) -> None:
    with pytest.raises(BadArgument, match="JSON object"):
        loads_object(json.dumps(value))


@SETTINGS
@given(objects, st.sampled_from(["NaN", "Infinity", "-Infinity"]))
def test_non_finite_literals_are_refused_wherever_they_are(value: dict, literal: str) -> None:
    text = json.dumps({**value, "bad": [1, {"deep": "__X__"}]}).replace('"__X__"', literal)
    with pytest.raises(BadArgument, match="not allowed"):
        loads_object(text)


@SETTINGS
@given(st.text(min_size=1, max_size=10).filter(lambda key: key not in Move.model_fields), finite)
def test_unknown_keys_are_named_in_the_refusal(key: str, x: float) -> None:
    with pytest.raises(BadArgument) as refused:
        parse_args(json.dumps({"frame": "sem", "x": x, key: 1}), Move)
    assert "unknown key" in str(refused.value)


@SETTINGS
@given(finite, st.integers(-1000, 1000))
def test_numbers_pass_and_numbers_sent_as_strings_do_not(x: float, count: int) -> None:
    parsed = parse_args(json.dumps({"frame": "sem", "x": x, "count": count}), Move)
    assert (parsed.frame, parsed.x, parsed.count) == ("sem", x, count)
    with pytest.raises(BadArgument, match="'x'"):
        parse_args(json.dumps({"frame": "sem", "x": str(x)}), Move)


@SETTINGS
@given(st.lists(st.floats() | st.integers(-1000, 1000), max_size=8))
def test_replies_are_plain_json_with_non_finite_numbers_as_null(numbers: list) -> None:
    reply = {"plain": numbers, "numpy": np.array([float(v) for v in numbers]), "flag": np.bool_(True)}
    decoded = json.loads(dumps(reply))
    expected = [v if isinstance(v, int) or math.isfinite(v) else None for v in numbers]
    assert decoded["plain"] == expected and decoded["flag"] is True
    assert decoded["numpy"] == [float(v) if v is not None else None for v in expected]
