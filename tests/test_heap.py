"""A copy holds the cyclic collector off what exists while it runs, and gives it back."""

from __future__ import annotations

import gc
import weakref

from migrator import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_a_held_heap_is_not_walked_and_the_last_copy_out_gives_it_back() -> None:
    assert gc.get_freeze_count() == 0
    node = _Node()
    alive = weakref.ref(node)
    with heap.held():
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert alive() is not None  # held: no collection walked it
        with heap.held():  # a second copy in the same process
            pass
        assert gc.get_freeze_count() > 0  # the first copy still holds it
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None  # what the copy left behind is collected as before


def test_settle_holds_what_was_made_since_but_only_inside_a_hold() -> None:
    heap.settle()
    assert gc.get_freeze_count() == 0
    with heap.held():
        before = gc.get_freeze_count()
        listing = [_Node() for _ in range(100)]
        heap.settle()
        assert gc.get_freeze_count() >= before + len(listing)
    assert gc.get_freeze_count() == 0
