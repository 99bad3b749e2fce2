"""pipeline.gc_phases.setting_up: collections are rare during set-up but still happen, the set-up's cyclic garbage
is collected by the way out, what survives is frozen (left out of later collections) and the thresholds end as they
were, also when the set-up raises. Each test starts with nothing frozen and leaves the worker's heap frozen, as
tests/conftest.py keeps it."""

import gc
import weakref

import pytest

from pipeline.gc_phases import YOUNG, setting_up


class Node:
    pass


def tracked(obj) -> bool:
    """Whether a later collection walks `obj` (gc.get_objects leaves the frozen generation out)."""
    return any(o is obj for o in gc.get_objects())


def cycle() -> weakref.ref:
    """A reference cycle nothing else holds (garbage only a collection frees), as a weak reference."""
    node = Node()
    node.me = node
    return weakref.ref(node)


@pytest.fixture(autouse=True)
def _unfrozen():
    before = gc.get_threshold()
    gc.unfreeze()  # nothing frozen before the test: what it finds frozen, setting_up froze
    yield
    gc.set_threshold(*before)
    gc.collect()
    gc.freeze()  # the worker's heap frozen again, as tests/conftest.py leaves it after collection


def test_set_up_garbage_goes_and_what_it_keeps_is_frozen():
    kept = Node()
    before = gc.get_threshold()
    with setting_up():
        assert gc.get_threshold() == (YOUNG, *before[1:])
        gone = cycle()
        assert gone() is not None  # a few allocations later: not yet collected
    assert gone() is None  # collected on the way out
    assert gc.get_threshold() == before and gc.get_freeze_count() > 0
    assert not tracked(kept)  # frozen: later collections leave it alone


def test_negative_control_without_it_objects_stay_in_the_collections():
    kept = Node()
    assert tracked(kept)


def test_a_long_set_up_still_collects_its_cycles():
    with setting_up():
        first = cycle()
        held = [Node() for _ in range(3 * YOUNG)]  # net allocations enough for collections of the youngest
        assert first() is None and len(held) == 3 * YOUNG  # collected inside, before the set-up ended


def test_a_raising_set_up_still_restores_and_freezes():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError, match="bad config"):
        with setting_up():
            raise RuntimeError("bad config")
    assert gc.get_threshold() == before and gc.get_freeze_count() > 0
