"""The pure allocator: property tests against a brute-force model, plus edge cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ipam.default.allocator import Allocator


def _model_first_free(taken: set[int], lo: int, hi: int) -> int | None:
    return next((o for o in range(lo, hi + 1) if o not in taken), None)


class AllocatorMachine(RuleBasedStateMachine):
    """Random take/allocate/release sequences; the allocator must match a plain set
    model: never the same offset twice, never out of bounds, lowest-free or serial order."""

    @initialize(
        first=st.integers(0, 3),
        width=st.integers(0, 40),
        lo_pad=st.integers(0, 5),
        hi_pad=st.integers(0, 5),
        serial=st.booleans(),
    )
    def setup(self, first: int, width: int, lo_pad: int, hi_pad: int, serial: bool) -> None:
        last = first + width
        lo = min(first + lo_pad, last)
        hi = max(lo, last - hi_pad)
        self.a = Allocator(first, last, lo, hi, serial=serial)
        self.first, self.last, self.lo, self.hi, self.serial = first, last, lo, hi, serial
        self.taken: set[int] = set()
        self.cursor = lo  # serial model: the next search starts here

    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        off = data.draw(st.integers(self.first, self.last))
        assert self.a.take(off) == (off not in self.taken)
        self.taken.add(off)

    @rule()
    def allocate(self) -> None:
        got = self.a.allocate()
        span = self.hi - self.lo + 1
        if self.serial:
            order = [self.lo + (self.cursor - self.lo + i) % span for i in range(span)]
            want = next((o for o in order if o not in self.taken), None)
        else:
            want = _model_first_free(self.taken, self.lo, self.hi)
        assert got == want
        if got is not None:
            assert self.lo <= got <= self.hi
            self.taken.add(got)
            self.cursor = self.lo + (got - self.lo + 1) % span

    @rule()
    def allocate_lowest(self) -> None:
        got = self.a.allocate_lowest()  # the gateway rule: lowest free of all the bounds
        assert got == _model_first_free(self.taken, self.first, self.last)
        if got is not None:
            self.taken.add(got)

    @precondition(lambda self: self.taken)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        off = data.draw(st.sampled_from(sorted(self.taken)))
        assert self.a.release(off) is True
        assert self.a.release(off) is False  # idempotent
        self.taken.discard(off)

    @invariant()
    def same_state(self) -> None:
        if hasattr(self, "a"):
            assert self.a.taken() == sorted(self.taken)
            assert len(self.a) == len(self.taken)
            assert self.a.range_full() == all(o in self.taken for o in range(self.lo, self.hi + 1))


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


@given(st.integers(1, 300), st.booleans())
def test_allocating_everything_gives_each_offset_once(width: int, serial: bool) -> None:
    a = Allocator(1, width, serial=serial)
    got = [a.allocate() for _ in range(width)]
    assert sorted(got) == list(range(1, width + 1))
    assert a.allocate() is None


@given(st.lists(st.integers(1, 100), unique=True, max_size=100))
def test_release_then_first_free_reuses_lowest(freed: list[int]) -> None:
    a = Allocator(1, 100)
    for _ in range(100):
        a.allocate()
    for off in freed:
        a.release(off)
    again = [a.allocate() for _ in freed]
    assert again == sorted(freed)
    assert a.allocate() is None


def test_first_free_order_skips_specific_takes() -> None:
    a = Allocator(1, 10)
    a.take(1)
    a.take(3)
    assert [a.allocate() for _ in range(3)] == [2, 4, 5]
    a.release(3)
    assert a.allocate() == 3


def test_serial_does_not_reuse_a_freed_address_at_once_and_wraps() -> None:
    a = Allocator(1, 5, serial=True)
    assert [a.allocate() for _ in range(3)] == [1, 2, 3]
    a.release(2)
    assert a.allocate() == 4
    assert a.allocate() == 5
    assert a.allocate() == 2  # wrapped around, skipping 1 and 3
    assert a.allocate() is None


def test_serial_cursor_survives_a_rebuild() -> None:
    a = Allocator(1, 10, serial=True)
    for _ in range(4):
        a.allocate()
    a.release(1)
    b = Allocator(1, 10, serial=True, cursor=a.cursor, taken=a.taken())
    assert b.allocate() == 5


def test_range_narrows_automatic_choice_but_not_specific_takes() -> None:
    a = Allocator(1, 254, 100, 101)
    assert a.take(7) is True
    assert [a.allocate(), a.allocate(), a.allocate()] == [100, 101, None]
    assert a.allocate_lowest() == 1


def test_out_of_bounds_take_is_refused() -> None:
    a = Allocator(1, 254)
    with pytest.raises(ValueError):
        a.take(0)
    with pytest.raises(ValueError):
        a.take(255)
    with pytest.raises(ValueError):
        Allocator(1, 10, 0, 5)


def test_ipv6_slash64_is_cheap_and_correct() -> None:
    last = (1 << 64) - 1
    a = Allocator(1, last)
    assert [a.allocate() for _ in range(3)] == [1, 2, 3]
    a.take(last)
    assert a.take(last) is False
    a.release(2)
    assert a.allocate() == 2
    assert a.allocate() == 4
    serial = Allocator(1, last, serial=True, cursor=last)
    assert serial.allocate() == last
    assert serial.allocate() == 1  # wraps to the start of a 2**64 range at once


def test_static_take_release_churn_does_not_grow_the_free_heap() -> None:
    a = Allocator(1, 254)
    for _ in range(10):
        a.allocate()
    a.release(5)
    for _ in range(10_000):  # a container with a fixed --ip restarting forever
        a.take(5)
        a.release(5)
    assert len(a._freed) <= 2 * 10 + 16
    assert [a.allocate(), a.allocate()] == [5, 11]
