"""Record row FIFO: up to ``lanes`` detection records per clock in, one record per clock out.

Bob can detect in up to ``P`` slots of one clock, while the record stream to the host takes
one record per clock. The FIFO stores one *row* per clock that has detections (the records
of the lanes in ``w_valid``) and serialises on the read side: records leave in row order,
lanes in increasing order within a row. Record format: ``hdl/record_fifo.py``.

Semantics per clock cycle (as :class:`qkdlink.hdl.record_fifo.RecordFifo`, with rows): a row
(``w_valid != 0``) is stored iff fewer than ``depth_rows`` rows are held at the start of the
cycle (a row is held until its last record has been read; a read in the same cycle does not
make room); otherwise it is dropped whole: ``dropped`` gives its number of records,
``overflow`` is set (sticky until ``clear_overflow``; a drop wins over a clear in the same
cycle) and the first record (lowest lane) of the next stored row gets ``gap = 1``. A cycle
with ``w_valid == 0`` writes nothing and drops nothing.
"""
from collections import deque

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bram import bram, read_port
from .record_fifo import GAP_BIT, RECORD_BITS

__all__ = ["RecordRowFifo", "RecordRowFifoModel", "serialise_rows"]


def _check_params(lanes, depth_rows) -> tuple[int, int]:
    if isinstance(lanes, bool) or int(lanes) != lanes or lanes < 1:
        raise ValueError(f"record row FIFO lanes = {lanes!r} must be an integer >= 1")
    if isinstance(depth_rows, bool) or int(depth_rows) != depth_rows or depth_rows < 1:
        raise ValueError(f"record row FIFO depth_rows = {depth_rows!r} must be an integer >= 1")
    return int(lanes), int(depth_rows)


def _lowest(mask):
    """One-hot of the lowest set bit of ``mask`` (0 if none)."""
    return Cat(mask[i] & ~mask[:i].any() if i else mask[0] for i in range(len(mask)))


def _popcount(v):
    terms = [v[i] for i in range(len(v))]
    while len(terms) > 1:
        terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
    return terms[0]


class RecordRowFifo(wiring.Component):
    """Row FIFO of detection records, serialised to one record per clock.

    Holds up to ``depth_rows`` rows in a ``lib.memory.Memory`` of ``depth_rows`` words: the
    ``lanes`` records (the gap bit already in the first one) and, for ``lanes > 1``, the lane
    mask, its lowest lane (one-hot) and a "single record" flag, all computed on the write
    side. Read side: memory read register (yosys merges it into the block RAM) -> row
    register being serialised. A block RAM without its output register (which yosys does
    not use) has a slow clock-to-out, so its outputs go into registers with an enable only;
    the serialiser's per-record state lives in separate registers, ``r.payload`` is an AND-OR
    multiplexer of registers, ``r.valid`` a register. A row leaves the memory when the
    serialiser takes the previous one: rows of one record stream at one record per clock.
    Fullness and "memory not empty" are registered flags updated with the ``level`` and
    ``avail`` counters (no adder or comparator after ``r.ready`` / ``w_valid``).

    Out-of-context nextpnr-ecp5 (LFE5U-25F, 156.25 MHz requested, seed 1), grade 8 / grade 6:
    lanes 4 x 256 rows 187 / 137 MHz (8 DP16KD, ~480 LUT, ~310 FF); 4 x 1024 192 / 143;
    2 x 256 188 / 140; 1 x 1024 196 / 145; 4 x 16 (LUT RAM) 257 / 205. The limit is the
    block RAM clock-to-out (5.6-5.8 ns at grade 6, 4.1-4.3 ns at grade 8) plus routing to the
    row registers; 156 MHz at grade 6 with block RAM would need the EBR output
    register (``REGMODE = "OUTREG"``, an extra cycle), which yosys does not infer.

    Latency (``LATENCY = 3``): ``r.valid`` is high in cycle ``t`` iff the oldest record still
    held belongs to a row written in a cycle ``<= t - 3``; so the first record of a row
    written in cycle ``c`` into an empty FIFO is on ``r`` from cycle ``c + 3``, and the stream
    has no bubbles while rows are held (full throughput).

    Ports
    -----
    w_records : In(ArrayLayout(unsigned(64), lanes))
        The records of this clock, one per lane (lanes outside ``w_valid`` are ignored).
    w_valid : In(lanes)
        Lanes with a record this clock; 0 writes nothing.
    r : Out(stream.Signature(64))
        Records in row order, lanes in increasing order within a row.
    dropped : Out(range(lanes + 1))
        Combinational: records dropped this clock (the whole row when full, else 0).
    overflow : Out(1)
        Registered, sticky: a row was dropped since the last ``clear_overflow``.
    clear_overflow : In(1)
        Clear ``overflow`` (a drop in the same cycle wins).
    level : Out(range(depth_rows + 1))
        Registered: rows held (written minus fully read, before this cycle).
    """

    LATENCY = 3

    def __init__(self, lanes: int, depth_rows: int):
        self.lanes, self.depth_rows = _check_params(lanes, depth_rows)
        super().__init__({
            "w_records": In(data.ArrayLayout(unsigned(RECORD_BITS), self.lanes)),
            "w_valid": In(self.lanes),
            "r": Out(stream.Signature(RECORD_BITS)),
            "dropped": Out(range(self.lanes + 1)),
            "overflow": Out(1),
            "clear_overflow": In(1),
            "level": Out(range(self.depth_rows + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        L, depth = self.lanes, self.depth_rows
        rec_bits = L * RECORD_BITS
        # memory word: records, then (lanes > 1) the lane mask, the one-hot of its lowest lane
        # and a flag "one record only", so that the serialiser loads its state straight from
        # the memory output
        ctl_bits = 2 * L + 1 if L > 1 else 0
        # Collisions (hdl/bram.py): a read is issued only for rows written in earlier
        # cycles, and no row is written while the memory is full.
        m.submodules.mem = mem = bram(unsigned(rec_bits + ctl_bits), depth)
        wr_port = mem.write_port()
        rd_port = read_port(m, mem, wr_port, platform=platform, name="rd_port")
        m_data = rd_port.data

        def incr(ptr):
            return ptr + 1 if depth & (depth - 1) == 0 else Mux(ptr == depth - 1, 0, ptr + 1)

        def counter(value, flag, flag_up, flag_down, up, down):
            """``value`` +1 on ``up``, -1 on ``down`` (not both), from precomputed +-1;
            ``flag`` <= ``flag_up`` / ``flag_down`` / itself: registered compares for free."""
            inc, dec = Signal(), Signal()
            m.d.comb += [inc.eq(up & ~down), dec.eq(down & ~up)]
            with m.If(inc):
                m.d.sync += [value.eq(value + 1), flag.eq(flag_up)]
            with m.Elif(dec):
                m.d.sync += [value.eq(value - 1), flag.eq(flag_down)]

        # ---- write side: decisions from registered flags
        full = Signal()                         # level == depth
        gap_pending = Signal()
        write = Signal()
        drop = Signal()
        wp = Signal(range(depth))
        first = _lowest(self.w_valid)
        m.d.comb += [
            write.eq(self.w_valid.any() & ~full),
            drop.eq(self.w_valid.any() & full),
            self.dropped.eq(Mux(full, _popcount(self.w_valid), 0)),
        ]
        gap = Const(1 << GAP_BIT, RECORD_BITS)
        recs = [self.w_records[i] | Mux(gap_pending & first[i], gap, 0) for i in range(L)]
        ctl = [self.w_valid, first, (self.w_valid & ~first) == 0] if L > 1 else []
        m.d.comb += [
            wr_port.addr.eq(wp),
            wr_port.en.eq(write),
            wr_port.data.eq(Cat(*recs, *ctl)),
        ]
        with m.If(write):
            m.d.sync += [wp.eq(incr(wp)), gap_pending.eq(0)]
        with m.If(drop):
            m.d.sync += [gap_pending.eq(1), self.overflow.eq(1)]
        with m.Elif(self.clear_overflow):
            m.d.sync += self.overflow.eq(0)

        # ---- read side: memory -> read port (m_valid) -> serialiser (row, rem, sel, last)
        rp = Signal(range(depth))
        avail = Signal(range(depth + 1))        # rows in memory not yet read out
        avail_nz = Signal()                     # avail != 0
        m_valid = Signal()                      # m_data holds a row not yet taken
        row = Signal(rec_bits, reset_less=True)  # only ever loaded from the memory output
        r_valid = Signal()
        rem = Signal(L)                         # lanes of ``row`` not yet sent (incl. current)
        sel = Signal(L)                         # one-hot: current lane, lowest of ``rem``
        last = Signal()                         # current record is the last of the row
        take = Signal()                         # serialiser loads the next row
        issue = Signal()                        # memory read
        retire = Signal()                       # the last record of a row leaves
        m.d.comb += [
            self.r.valid.eq(r_valid),
            self.r.payload.eq(_or_select(sel, row, RECORD_BITS) if L > 1 else row),
            retire.eq(r_valid & self.r.ready & last),
            take.eq(m_valid & (~r_valid | (self.r.ready & last))),
            issue.eq(avail_nz & (~m_valid | take)),
            rd_port.addr.eq(rp),
        ]
        m.d.comb += rd_port.en.eq(issue)
        with m.If(take):
            m.d.sync += [row.eq(m_data[:rec_bits]), r_valid.eq(1)]
        with m.Elif(retire):
            m.d.sync += r_valid.eq(0)
        if L > 1:
            # The memory output goes into registers with an enable only (its clock-to-out is
            # the slow part): *0 is the row's (rem, sel, last) at its first record; after
            # that record the state moves on in *1 (``started``).
            ctl_out = m_data[rec_bits:]
            rem0 = Signal(L, reset_less=True)
            sel0 = Signal(L, reset_less=True)
            last0 = Signal(reset_less=True)
            rem1, sel1, last1 = Signal(L), Signal(L), Signal()
            started = Signal()
            with m.If(take):
                m.d.sync += [rem0.eq(ctl_out[:L]), sel0.eq(ctl_out[L:2 * L]),
                             last0.eq(ctl_out[2 * L]), started.eq(0)]
            m.d.comb += [rem.eq(Mux(started, rem1, rem0)), sel.eq(Mux(started, sel1, sel0)),
                         last.eq(Mux(started, last1, last0))]
            nxt = rem & ~sel
            nxt_sel = _lowest(nxt)
            with m.If(r_valid & self.r.ready & ~last):     # (excludes take)
                m.d.sync += [rem1.eq(nxt), sel1.eq(nxt_sel), last1.eq((nxt & ~nxt_sel) == 0),
                             started.eq(1)]
        else:
            m.d.comb += [rem.eq(1), sel.eq(1), last.eq(1)]
        with m.If(issue):
            m.d.sync += [rp.eq(incr(rp)), m_valid.eq(1)]
        with m.Elif(take):
            m.d.sync += m_valid.eq(0)

        counter(avail, avail_nz, 1, avail != 1, write, issue)
        counter(self.level, full, self.level == depth - 1, 0, write, retire)
        return m


def _or_select(onehot, words, width):
    """The ``width``-bit field of ``words`` selected by the one-hot ``onehot`` (AND-OR)."""
    out = Const(0, width)
    for i in range(len(onehot)):
        out = out | (words[i * width:(i + 1) * width] & onehot[i].replicate(width))
    return out


class RecordRowFifoModel:
    """Python model of :class:`RecordRowFifo` at the transaction level.

    Per clock cycle call :meth:`clear_overflow` (if commanded), then :meth:`push_row` (every
    cycle, or only when ``mask`` is non-zero), then :meth:`pop` (if the ``r`` handshake
    happened): a push sees the level at the start of the cycle. Attributes: ``level`` (rows
    held), ``overflow`` (sticky), ``gap_pending``, ``dropped`` and ``stored`` (record counts),
    ``dropped_rows``. The timing of ``r.valid`` is not modelled (see :class:`RecordRowFifo`).
    For a run without overflow the output is :func:`serialise_rows` of the rows.
    """

    def __init__(self, lanes: int, depth_rows: int):
        self.lanes, self.depth_rows = _check_params(lanes, depth_rows)
        self._rows = deque()            # each a deque of the remaining records of a row
        self.overflow = False
        self.gap_pending = False
        self.dropped = 0
        self.dropped_rows = 0
        self.stored = 0

    @property
    def level(self) -> int:
        return len(self._rows)

    def clear_overflow(self):
        self.overflow = False

    def push_row(self, records, mask) -> int:
        """Store the records of the lanes in ``mask`` (int bit mask or ``lanes`` bools) as one
        row, or drop the row whole if ``depth_rows`` rows are held. Returns the number of
        records dropped (the ``dropped`` port); an empty mask does nothing and returns 0."""
        bits = _mask_bits(mask, self.lanes)
        recs = [int(r) for r in np.asarray(records, dtype=np.uint64).ravel()]
        if len(recs) != self.lanes:
            raise ValueError(f"push_row needs {self.lanes} records, got {len(recs)}")
        lanes = [i for i in range(self.lanes) if bits[i]]
        if not lanes:
            return 0
        if self.level == self.depth_rows:
            self.dropped += len(lanes)
            self.dropped_rows += 1
            self.overflow = True
            self.gap_pending = True
            return len(lanes)
        row = deque(recs[i] for i in lanes)
        row[0] |= int(self.gap_pending) << GAP_BIT
        self._rows.append(row)
        self.stored += len(lanes)
        self.gap_pending = False
        return 0

    def peek(self) -> int | None:
        """The oldest record (the ``r.payload`` when ``r.valid``), or None if empty."""
        return self._rows[0][0] if self._rows else None

    def pop(self) -> int | None:
        """Remove and return the oldest record (None if empty); the row is no longer held
        once its last record is popped."""
        if not self._rows:
            return None
        row = self._rows[0]
        rec = row.popleft()
        if not row:
            self._rows.popleft()
        return rec

    @staticmethod
    def serialise_rows(records, mask) -> np.ndarray:
        """See :func:`serialise_rows`."""
        return serialise_rows(records, mask)


def _mask_bits(mask, lanes) -> list[bool]:
    if np.ndim(mask) == 0:
        v = int(mask)
        if not 0 <= v < (1 << lanes):
            raise ValueError(f"mask = {mask!r} outside [0, {1 << lanes})")
        return [bool(v >> i & 1) for i in range(lanes)]
    b = np.asarray(mask, dtype=bool).ravel()
    if b.size != lanes:
        raise ValueError(f"mask needs {lanes} lanes, got {b.size}")
    return b.tolist()


def serialise_rows(records, mask) -> np.ndarray:
    """Records in output order for a run without overflow: ``records`` (n, lanes) uint64,
    ``mask`` (n, lanes) bool -> the records of the set lanes, row by row, lanes in increasing
    order (uint64). Rows with an empty mask contribute nothing."""
    recs = np.asarray(records, dtype=np.uint64)
    msk = np.asarray(mask, dtype=bool)
    if recs.ndim != 2 or msk.shape != recs.shape:
        raise ValueError(f"records and mask must both be (n, lanes), got {recs.shape} and "
                         f"{msk.shape}")
    return recs[msk]
