"""imgsearch/gcpause.py: the collector paused for bulk work, and back as it was after it, whatever happens."""
from __future__ import annotations

import gc

import pytest

from imgsearch.gcpause import paused


@pytest.fixture(autouse=True)
def _collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_paused_inside_and_back_after_also_after_an_error():
    with paused():
        assert not gc.isenabled()
        with paused():                       # nested: still off after the inner block
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with paused():
            raise ValueError("the work failed")
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_caller_stays_off():
    gc.disable()
    with paused():
        pass
    assert not gc.isenabled()

