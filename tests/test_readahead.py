"""imgsearch/readahead.py: an iterator read ahead on a thread."""
from __future__ import annotations

import threading
import time

import pytest

from imgsearch.readahead import read_ahead


def test_items_come_in_order_and_are_made_on_another_thread():
    made_on = []

    def items():
        for i in range(50):
            made_on.append(threading.current_thread().name)
            yield i

    assert list(read_ahead(items(), depth=3, name="reader-x")) == list(range(50))
    assert set(made_on) == {"reader-x"}


def test_an_error_of_the_source_is_raised_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("bad shard")

    got = []
    with pytest.raises(ValueError, match="bad shard"):
        for x in read_ahead(items()):
            got.append(x)
    assert got == [1, 2]


def test_a_consumer_that_stops_stops_the_thread_and_closes_the_source_there():
    closed_on = []
    made = []

    def items():
        try:
            for i in range(10_000):
                made.append(i)
                yield i
        finally:
            closed_on.append(threading.current_thread().name)

    it = read_ahead(items(), depth=2, name="reader-y")
    assert next(it) == 0
    it.close()
    deadline = time.monotonic() + 5
    while not closed_on and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed_on == ["reader-y"]          # closed where it ran (its connection's thread)
    assert len(made) <= 5                     # only the items read ahead were made
