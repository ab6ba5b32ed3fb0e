"""Detection records and the record FIFO that feeds the host link.

See ``docs/receiver.md`` ("Detection records"). A record is 64 bits:

========  =========  ==========================================================
bits      field      meaning
========  =========  ==========================================================
[0:48]    ``slot``   Alice's slot index of the detection
[48]      ``basis``  0 = Z, 1 = X
[49]      ``bit``
[50:53]   ``fine``   fine time, samples within the slot
[53]      ``multi``  double or cross-basis multi-click
[54]      ``gap``    records were dropped (FIFO full) just before this one
[55:64]   --         0
========  =========  ==========================================================

FIFO semantics, per clock cycle: a write (``w_en``) is stored iff the FIFO holds fewer than
``depth`` records at the start of the cycle (a read in the same cycle does not make room for
it); otherwise it is dropped whole: ``dropped`` pulses, ``overflow`` is set (sticky until
``clear_overflow``; a drop wins over a clear in the same cycle) and the next stored record
gets ``gap = 1``. Records leave in write order on the ``r`` stream.
"""
import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .fifo import BramFifo

__all__ = [
    "RECORD_BITS", "SLOT_BITS", "BASIS_BIT", "BIT_BIT", "FINE_SHIFT", "FINE_BITS", "MULTI_BIT",
    "GAP_BIT", "pack_record", "pack_record_value", "unpack_record", "pack_records", "unpack_records",
    "RecordFifo", "RecordFifoModel",
]

RECORD_BITS = 64
SLOT_BITS = 48
BASIS_BIT = 48
BIT_BIT = 49
FINE_SHIFT = 50
FINE_BITS = 3
MULTI_BIT = 53
GAP_BIT = 54

_SLOT_MASK = (1 << SLOT_BITS) - 1
_FIELDS = ("slot", "basis", "bit", "fine", "multi", "gap")


def pack_record(slot, basis, bit, fine, multi=0, gap=0) -> int:
    """One 64-bit record; ``slot`` is taken mod 2**48, the other fields must fit."""
    for name, value, width in (("basis", basis, 1), ("bit", bit, 1), ("fine", fine, FINE_BITS),
                               ("multi", multi, 1), ("gap", gap, 1)):
        if not 0 <= int(value) < (1 << width):
            raise ValueError(f"record field {name} = {value!r} outside [0, {1 << width})")
    return ((int(slot) & _SLOT_MASK) | (int(basis) << BASIS_BIT) | (int(bit) << BIT_BIT)
            | (int(fine) << FINE_SHIFT) | (int(multi) << MULTI_BIT) | (int(gap) << GAP_BIT))


def pack_record_value(slot, basis, bit, fine, multi, gap=0):
    """The gateware twin of :func:`pack_record`: a 64-bit Amaranth value from signals."""
    from amaranth.hdl import Cat, Const
    return Cat(slot[:SLOT_BITS], basis, bit, fine[:FINE_BITS], multi, gap, Const(0, RECORD_BITS - GAP_BIT - 1))


def unpack_record(record: int) -> dict:
    """Inverse of :func:`pack_record`: dict of the six fields (ints)."""
    r = int(record)
    return {"slot": r & _SLOT_MASK, "basis": (r >> BASIS_BIT) & 1, "bit": (r >> BIT_BIT) & 1,
            "fine": (r >> FINE_SHIFT) & ((1 << FINE_BITS) - 1), "multi": (r >> MULTI_BIT) & 1,
            "gap": (r >> GAP_BIT) & 1}


def pack_records(slot, basis, bit, fine, multi=0, gap=0) -> np.ndarray:
    """Vectorised :func:`pack_record` (broadcasting) -> uint64 array; fields are masked to
    their widths."""
    u = np.uint64
    out = np.asarray(slot).astype(u) & u(_SLOT_MASK)
    out = out | ((np.asarray(basis).astype(u) & u(1)) << u(BASIS_BIT))
    out = out | ((np.asarray(bit).astype(u) & u(1)) << u(BIT_BIT))
    out = out | ((np.asarray(fine).astype(u) & u((1 << FINE_BITS) - 1)) << u(FINE_SHIFT))
    out = out | ((np.asarray(multi).astype(u) & u(1)) << u(MULTI_BIT))
    return out | ((np.asarray(gap).astype(u) & u(1)) << u(GAP_BIT))


def unpack_records(records) -> dict:
    """Vectorised :func:`unpack_record`: dict of uint64 (slot) / uint8 arrays."""
    r = np.asarray(records, dtype=np.uint64)
    u = np.uint64
    bit = lambda k, w=1: ((r >> u(k)) & u((1 << w) - 1)).astype(np.uint8)
    return {"slot": r & u(_SLOT_MASK), "basis": bit(BASIS_BIT), "bit": bit(BIT_BIT),
            "fine": bit(FINE_SHIFT, FINE_BITS), "multi": bit(MULTI_BIT), "gap": bit(GAP_BIT)}


def _check_depth(depth) -> int:
    if int(depth) != depth or depth < 1:
        raise ValueError(f"record FIFO depth = {depth!r} must be an integer >= 1")
    return int(depth)


class RecordFifo(wiring.Component):
    """Record FIFO: no back-pressure on writes, drop-whole-record on full, gap flag.

    Holds up to ``depth`` records. Inside is a :class:`~qkdlink.hdl.fifo.BramFifo` (clock for
    clock a ``SyncFIFOBuffered``) of depth ``depth + 1``
    (its memory has exactly ``depth`` rows, block-RAM friendly for a power of two); a
    separate level counter decides fullness. Latency: a record written in cycle ``c`` is on
    ``r`` (``r.valid``) from cycle ``c + 2`` at the earliest (``LATENCY``); in general
    ``r.valid`` is high in cycle ``t`` iff the oldest record still held was written in a cycle
    ``<= t - 2``. Full throughput (one record per cycle) in steady state. Out-of-context
    nextpnr-ecp5 (LFE5U-25F, depth 1024): 209 MHz at speed grade 8, 147 MHz at grade 6 (the
    path is inside the FIFO: level -> block-RAM read enable; measured with
    ``SyncFIFOBuffered``).

    Ports
    -----
    w_data : In(64)
        Record to store; its ``gap`` bit is OR-ed with the pending gap flag.
    w_en : In(1)
        Store ``w_data`` this cycle (or drop it if full).
    r : Out(stream.Signature(64))
        Records in write order.
    dropped : Out(1)
        Combinational: the write of this cycle is dropped (``w_en`` and full).
    overflow : Out(1)
        Registered, sticky: a record was dropped since the last ``clear_overflow``.
    clear_overflow : In(1)
        Clear ``overflow`` (a drop in the same cycle wins).
    level : Out(range(depth + 1))
        Registered: records held (written minus read before this cycle).
    """

    LATENCY = 2

    def __init__(self, depth: int):
        self.depth = _check_depth(depth)
        super().__init__({
            "w_data": In(RECORD_BITS),
            "w_en": In(1),
            "r": Out(stream.Signature(RECORD_BITS)),
            "dropped": Out(1),
            "overflow": Out(1),
            "clear_overflow": In(1),
            "level": Out(range(self.depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = BramFifo(width=RECORD_BITS, depth=self.depth + 1)

        full = Signal()
        gap_pending = Signal()
        write = Signal()
        read = Signal()
        m.d.comb += [
            full.eq(self.level == self.depth),
            write.eq(self.w_en & ~full),
            read.eq(self.r.valid & self.r.ready),
            self.dropped.eq(self.w_en & full),
            fifo.w_en.eq(write),
            fifo.w_data.eq(self.w_data | (gap_pending << GAP_BIT)),
            self.r.payload.eq(fifo.r_data),
            self.r.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.r.ready),
        ]
        m.d.sync += self.level.eq(self.level + write - read)
        with m.If(write):
            m.d.sync += gap_pending.eq(0)
        with m.If(self.dropped):
            m.d.sync += [gap_pending.eq(1), self.overflow.eq(1)]
        with m.Elif(self.clear_overflow):
            m.d.sync += self.overflow.eq(0)
        return m


class RecordFifoModel:
    """Python model of :class:`RecordFifo` at the transaction level.

    Per clock cycle call :meth:`clear_overflow` (if commanded), then :meth:`push` (if
    ``w_en``), then :meth:`pop` (if the ``r`` handshake happened): a push sees the level at
    the start of the cycle. Attributes: ``level``, ``overflow`` (sticky), ``dropped`` (count),
    ``stored`` (count), ``gap_pending``. The timing of ``r.valid`` is not modelled (see
    :class:`RecordFifo`). :meth:`push_many` / :meth:`pop_many` are the vectorised form for a
    burst of writes without reads in between, or reads without writes.
    """

    def __init__(self, depth: int):
        self.depth = _check_depth(depth)
        self._buf = np.zeros(self.depth, dtype=np.uint64)
        self._head = 0
        self.level = 0
        self.overflow = False
        self.gap_pending = False
        self.dropped = 0
        self.stored = 0

    def clear_overflow(self):
        self.overflow = False

    def push(self, record: int) -> bool:
        """Store one record (True) or drop it (False)."""
        if self.level == self.depth:
            self.dropped += 1
            self.overflow = True
            self.gap_pending = True
            return False
        rec = int(record) | (int(self.gap_pending) << GAP_BIT)
        self._buf[(self._head + self.level) % self.depth] = rec
        self.level += 1
        self.stored += 1
        self.gap_pending = False
        return True

    def peek(self) -> int | None:
        """The oldest record, or None if empty."""
        return int(self._buf[self._head]) if self.level else None

    def pop(self) -> int | None:
        """Remove and return the oldest record (None if empty)."""
        if not self.level:
            return None
        rec = int(self._buf[self._head])
        self._head = (self._head + 1) % self.depth
        self.level -= 1
        return rec

    def push_many(self, records) -> np.ndarray:
        """Push a burst (no reads in between); returns the bool mask of stored records."""
        recs = np.asarray(records, dtype=np.uint64).ravel()
        k = min(recs.size, self.depth - self.level)
        stored = np.zeros(recs.size, dtype=bool)
        stored[:k] = True
        if k:
            vals = recs[:k].copy()
            vals[0] |= np.uint64(int(self.gap_pending) << GAP_BIT)
            self._buf[(self._head + self.level + np.arange(k)) % self.depth] = vals
            self.level += k
            self.stored += k
            self.gap_pending = False
        if recs.size > k:
            self.dropped += recs.size - k
            self.overflow = True
            self.gap_pending = True
        return stored

    def pop_many(self, n: int | None = None) -> np.ndarray:
        """Pop up to ``n`` records (all if None) -> uint64 array, oldest first."""
        k = self.level if n is None else min(int(n), self.level)
        out = self._buf[(self._head + np.arange(k)) % self.depth].copy()
        self._head = (self._head + k) % self.depth
        self.level -= k
        return out
