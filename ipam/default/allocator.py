"""A pure address allocator for one pool, in offset space (no I/O, no store).

Addresses are offsets from the pool's network address: 0 … size-1. The allocator
keeps only what was handed out, so its memory grows with the number of allocated
addresses, never with the size of the range (an IPv6 /64 costs as little as a /24).

State:
- `_taken`: a set of allocated offsets (anywhere in the usable bounds);
- first-free mode: `_next`, a high-water mark in the automatic range — every offset
  of [lo, _next) is either taken or sits in `_freed`, a min-heap of released offsets.
  Heap entries are deleted lazily: an entry that was taken again by a specific
  request is skipped when popped. The lowest free offset is therefore the smallest
  valid heap entry, or else the first untaken offset at or after `_next`.
- serial mode: `_cursor`, where the next search starts; it moves past every
  address handed out and wraps at the end of the range, so a freed address is reused
  only after the rest of the range was used.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class Allocator:
    """Hands out offsets in [first, last]; automatic choices come from [lo, hi].

    `first`/`last` bound what may be taken at all (the pool's usable addresses);
    `lo`/`hi` bound automatic allocation (the --ip-range, clipped to the usable
    addresses). Offsets outside [first, last] (network, broadcast) are never handed out.
    """

    def __init__(
        self,
        first: int,
        last: int,
        lo: int | None = None,
        hi: int | None = None,
        *,
        serial: bool = False,
        cursor: int | None = None,
        taken: Iterable[int] = (),
    ) -> None:
        lo = first if lo is None else lo
        hi = last if hi is None else hi
        if not (first <= lo and hi <= last):
            raise ValueError(f"range [{lo}, {hi}] is not inside [{first}, {last}]")
        self.first, self.last, self.lo, self.hi = first, last, lo, hi
        self.serial = serial
        self._taken: set[int] = set()
        self._in_range = 0  # how many taken offsets lie in [lo, hi]
        self._next = lo
        self._freed: list[int] = []
        self._cursor = lo if cursor is None or not (lo <= cursor <= hi) else cursor
        for off in taken:
            self.take(off)

    # -- inspection -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._taken)

    def __contains__(self, off: int) -> bool:
        return off in self._taken

    def taken(self) -> list[int]:
        """Allocated offsets, sorted."""
        return sorted(self._taken)

    @property
    def cursor(self) -> int:
        """Where the next serial search starts (persist it to keep serial order)."""
        return self._cursor

    def in_bounds(self, off: int) -> bool:
        return self.first <= off <= self.last

    def range_full(self) -> bool:
        return self._in_range >= self.hi - self.lo + 1

    # -- changes ----------------------------------------------------------------------

    def take(self, off: int) -> bool:
        """Mark `off` allocated; False if it already was. Raises ValueError out of bounds."""
        if not self.in_bounds(off):
            raise ValueError(f"offset {off} is outside [{self.first}, {self.last}]")
        if off in self._taken:
            return False
        self._taken.add(off)
        if self.lo <= off <= self.hi:
            self._in_range += 1
        return True

    def release(self, off: int) -> bool:
        """Free `off`; False if it was not allocated. Idempotent."""
        if off not in self._taken:
            return False
        self._taken.discard(off)
        if self.lo <= off <= self.hi:
            self._in_range -= 1
            if not self.serial and off < self._next:
                heapq.heappush(self._freed, off)
                # A static address taken and freed again and again leaves stale copies
                # behind; at most (_next - lo) entries can be valid, so dedupe past twice that.
                if len(self._freed) > 2 * (self._next - self.lo) + 16:
                    self._freed = sorted({o for o in self._freed if o not in self._taken})
        return True

    def allocate(self) -> int | None:
        """Take and return the next offset of [lo, hi] by the pool's policy; None if full."""
        if self.range_full():
            return None
        off = self._next_serial() if self.serial else self._next_first_free()
        self.take(off)
        return off

    def allocate_lowest(self) -> int | None:
        """Take the lowest free offset of the whole usable bounds [first, last] (the
        gateway's rule: it may lie outside the --ip-range). None if every one is taken."""
        if self.first == self.lo and self.last == self.hi and not self.serial:
            return self.allocate()
        if len(self._taken) >= self.last - self.first + 1:
            return None
        off = self.first
        while off in self._taken:  # at most len(_taken) steps
            off += 1
        self.take(off)
        return off

    # -- policies ---------------------------------------------------------------------

    def _next_first_free(self) -> int:
        while self._freed:
            off = heapq.heappop(self._freed)
            if off not in self._taken:
                return off
        off = self._next
        while off in self._taken:
            off += 1
        # range_full() was False, so a free offset exists at or after _next.
        self._next = off + 1
        return off

    def _next_serial(self) -> int:
        off, span = self._cursor, self.hi - self.lo + 1
        while off in self._taken:
            off = self.lo + (off - self.lo + 1) % span
        self._cursor = self.lo + (off - self.lo + 1) % span
        return off
