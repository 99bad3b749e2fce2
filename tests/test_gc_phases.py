"""pipeline.gc_phases.setting_up: the collector is off during set-up, the set-up's cyclic garbage is collected on the
way out, what survives is frozen (left out of later collections) and the collector ends as it was, also when the
set-up raises. Each test unfreezes afterwards, so the worker's collector is as every other test expects."""

import gc
import weakref

import pytest

from pipeline.gc_phases import setting_up


class Node:
    pass


def tracked(obj) -> bool:
    """Whether a later collection walks `obj` (gc.get_objects leaves the frozen generation out)."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture(autouse=True)
def _unfreeze():
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    yield
    gc.unfreeze()
    gc.enable()


def test_set_up_garbage_goes_and_what_it_keeps_is_frozen():
    kept = Node()
    with setting_up():
        assert not gc.isenabled()
        cycle = Node()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        del cycle
        assert gone() is not None
    assert gone() is None  # collected on the way out
    assert gc.isenabled() and gc.get_freeze_count() > 0
    assert not tracked(kept)  # frozen: later collections leave it alone


def test_negative_control_without_it_objects_stay_in_the_collections():
    kept = Node()
    assert tracked(kept)


def test_a_collector_that_was_off_stays_off_and_a_raising_set_up_still_finishes():
    gc.disable()
    with pytest.raises(RuntimeError, match="bad config"):
        with setting_up():
            raise RuntimeError("bad config")
    assert not gc.isenabled() and gc.get_freeze_count() > 0
    with pytest.raises(ValueError):
        with setting_up():
            raise ValueError
    gc.enable()
    with setting_up():
        pass
    assert gc.isenabled()
