"""Exact time and strict number parsing of frame fields (``actors/live/parsing.py``)."""

from __future__ import annotations

import pandas as pd
import pytest

from actors.live.parsing import FrameError, integer, ms_to_ns, number, rfc3339_ns


@pytest.mark.parametrize(
    "text",
    [
        "2021-04-17T16:43:30.244075Z",  # Coinbase, µs
        "2021-02-22T15:51:45.3355677Z",  # Alpaca, 7 digits
        "2023-04-06T11:54:26.838232225Z",  # Alpaca, ns
        "2021-02-22T15:51:44.208Z",  # ms
        "2021-02-22T15:51:44Z",  # no fraction
        "2024-02-29T23:59:59.999999999+02:00",  # offset, leap day
        "1969-12-31T23:59:59.5-05:30",  # before the epoch, negative offset
    ],
)
def test_rfc3339_is_exact_to_the_nanosecond(text):
    assert rfc3339_ns(text, "t") == pd.Timestamp(text).value


@pytest.mark.parametrize("text", ["2021-02-30T00:00:00Z", "2021-04-17 16:43", "2021-04-17T16:43:30.1234567890Z", "", 1618677810, None])
def test_rfc3339_rejects_what_it_cannot_read_exactly(text):
    with pytest.raises(FrameError) as info:
        rfc3339_ns(text, "time")
    assert info.value.reason == "bad_timestamp"


def test_ms_numbers_and_integers():
    assert ms_to_ns(1672515782136, "T") == 1672515782136 * 10**6
    for bad in (True, 1.5e12, "1672515782136", 0, -5, 10**15):
        with pytest.raises(FrameError, match="is not a time in ms"):
            ms_to_ns(bad, "T")
    assert number("4149.74000000", "p") == 4149.74 and number(7296.89, "p") == 7296.89 and number(3, "s") == 3.0
    for bad, message in ((True, "is not a number"), ("abc", "is not a number"), ("inf", "is not a finite number"), ([1], "is not a number")):
        with pytest.raises(FrameError, match=message) as info:
            number(bad, "p")
        assert info.value.reason == "bad_number"
    assert integer(705291099, "t") == 705291099
    with pytest.raises(FrameError):
        integer(1.0, "t")
