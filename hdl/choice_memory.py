"""Choice memory: the 4-bit symbol of every recently emitted slot, answered by slot index.

See ``docs/transmitter.md`` ("Slot counter, choice memory, ..."). The memory holds
``depth_slots`` slots as ``depth_slots // P`` rows of ``P`` symbols; slot ``q`` lives in row
``(q // P) mod rows``, lane ``q mod P``.

``written_end`` is ``slot_base + P`` of the last write (0 after reset or ``clear``). A query
for slot ``q`` is classified against ``written_end`` as it is in the cycle the query is
accepted, before that cycle's write:

* OK (0) if ``written_end - depth_slots + P <= q < written_end`` (the row being overwritten
  next is already excluded);
* FUTURE (2) if ``q >= written_end``;
* LOST (1) otherwise. LOST and FUTURE answers carry symbol 0.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = [
    "STATUS_OK", "STATUS_LOST", "STATUS_FUTURE", "ChoiceAnswer",
    "ChoiceMemory", "ChoiceMemoryModel",
]

STATUS_OK = 0
STATUS_LOST = 1
STATUS_FUTURE = 2

SLOT_BITS = 48

ChoiceAnswer = data.StructLayout({"slot": SLOT_BITS, "symbol": 4, "status": 2})


def _check_params(slots_per_clock, depth_slots) -> int:
    if slots_per_clock not in (1, 2, 4):
        raise ValueError(f"slots_per_clock must be 1, 2 or 4, not {slots_per_clock!r}")
    if (int(depth_slots) != depth_slots or depth_slots < 2 * slots_per_clock
            or depth_slots & (depth_slots - 1)):
        raise ValueError(f"depth_slots = {depth_slots!r} must be a power of two >= "
                         f"2 * slots_per_clock = {2 * slots_per_clock}")
    return depth_slots // slots_per_clock


class ChoiceMemory(wiring.Component):
    """Symbol store with a query/answer stream interface.

    Answer latency is 1 cycle: an accepted query's answer is valid in the next cycle and held
    until taken. ``query.ready = ~answer.valid | answer.ready``. Writes never stall.

    Ports
    -----
    write : In(1)
        Store ``symbols`` at ``slot_base`` this cycle.
    slot_base : In(48)
        Slot index of lane 0 of the write (a multiple of ``P``).
    symbols : In(4*P)
        Symbol codes, lane ``p`` in bits ``[4p, 4p+4)``.
    clear : In(1)
        Forget everything (``written_end := 0``); wins over a write in the same cycle (the
        write's data is stored but not counted as written).
    query : In(stream.Signature(48))
        Slot index to look up; at most one per cycle.
    answer : Out(stream.Signature(ChoiceAnswer))
        ``{slot, symbol, status}``, in query order.
    lost : Out(1)
        Registered one-cycle pulse in the first cycle a LOST answer is presented
        (``answer.valid`` rises with it): exactly one pulse per LOST answer, *issued*, not
        waiting for it to be taken.
    """

    def __init__(self, slots_per_clock: int, depth_slots: int):
        self.rows = _check_params(slots_per_clock, depth_slots)
        self.P = slots_per_clock
        self.depth_slots = int(depth_slots)
        super().__init__({
            "write": In(1),
            "slot_base": In(SLOT_BITS),
            "symbols": In(4 * slots_per_clock),
            "clear": In(1),
            "query": In(stream.Signature(SLOT_BITS)),
            "answer": Out(stream.Signature(ChoiceAnswer)),
            "lost": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        P, D = self.P, self.depth_slots
        lp = P.bit_length() - 1
        lr = self.rows.bit_length() - 1

        m.submodules.mem = mem = Memory(shape=4 * P, depth=self.rows, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="sync", transparent_for=())   # reads the pre-write contents

        # 49 bits: slot_base + P may reach 2**48.
        written_end = Signal(SLOT_BITS + 1)
        m.d.comb += [
            wr.addr.eq(self.slot_base[lp:lp + lr]),
            wr.data.eq(self.symbols),
            wr.en.eq(self.write),
        ]
        # ok_from = max(0, written_end - D + P), kept in a register of its own so that the
        # classification below is two compares of q against registers (no adder before them);
        # from the write's slot_base: max(0, slot_base - (D - 2P)), one subtraction deep.
        ok_from = Signal(SLOT_BITS + 1)
        with m.If(self.clear):
            m.d.sync += [written_end.eq(0), ok_from.eq(0)]
        with m.Elif(self.write):
            m.d.sync += [written_end.eq(self.slot_base + P),
                         ok_from.eq(Mux(self.slot_base >= D - 2 * P, self.slot_base - (D - 2 * P), 0))]

        q = self.query.payload
        accept = Signal()
        # The block RAM reads every clock (its enable is a constant): the stream handshake
        # (`accept`, which depends on the consumer's `ready`) only reaches registers, not the
        # RAM's clock enable. The row read in the accept clock is picked in the next clock
        # and kept in `held_symbol` for an answer that waits longer.
        m.d.comb += [
            self.query.ready.eq(~self.answer.valid | self.answer.ready),
            accept.eq(self.query.valid & self.query.ready),
            rd.addr.eq(q[lp:lp + lr]),
            rd.en.eq(1),
        ]

        status = Signal(2)
        lane = Signal(range(P)) if P > 1 else None
        with m.If(q >= written_end):
            m.d.comb += status.eq(STATUS_FUTURE)
        with m.Elif(q >= ok_from):                     # q >= written_end - D + P
            m.d.comb += status.eq(STATUS_OK)
        with m.Else():
            m.d.comb += status.eq(STATUS_LOST)

        ans = self.answer.payload
        m.d.sync += self.lost.eq(0)
        with m.If(accept):
            m.d.sync += [
                self.answer.valid.eq(1),
                ans.slot.eq(q),
                ans.status.eq(status),
                self.lost.eq(status == STATUS_LOST),
            ]
            if lane is not None:
                m.d.sync += lane.eq(q[:lp])
        with m.Elif(self.answer.ready):
            m.d.sync += self.answer.valid.eq(0)

        row = rd.data
        picked = row.word_select(lane, 4) if lane is not None else row
        fresh = Signal()                        # first clock of the answer: the RAM row is its own
        held_symbol = Signal(4)
        m.d.sync += fresh.eq(accept)
        with m.If(fresh):
            m.d.sync += held_symbol.eq(picked)
        m.d.comb += ans.symbol.eq(Mux(ans.status == STATUS_OK, Mux(fresh, picked, held_symbol), 0))
        return m


class ChoiceMemoryModel:
    """Python model of :class:`ChoiceMemory` storage and classification (vectorised)."""

    def __init__(self, slots_per_clock: int, depth_slots: int):
        self.rows = _check_params(slots_per_clock, depth_slots)
        self.P = slots_per_clock
        self.depth_slots = int(depth_slots)
        self.mem = np.zeros((self.rows, self.P), dtype=np.uint8)
        self.written_end = 0

    def clear(self):
        """Forget everything (``written_end = 0``); stored data stays but is unreachable."""
        self.written_end = 0

    def write(self, slot_base: int, codes):
        """One clock's write: ``codes`` are the ``P`` symbol codes of slots ``slot_base + p``."""
        self.write_many(np.array([slot_base], dtype=np.uint64),
                        np.asarray(codes, dtype=np.uint8).reshape(1, self.P))

    def write_many(self, slot_bases, codes):
        """``n`` clocks of writes in order: ``slot_bases`` (n,), ``codes`` (n, P)."""
        sb = np.asarray(slot_bases, dtype=np.uint64).ravel()
        c = np.asarray(codes, dtype=np.uint8).reshape(sb.size, self.P)
        if sb.size == 0:
            return
        if (sb % np.uint64(self.P)).any():
            raise ValueError(f"slot_base values must be multiples of P = {self.P}")
        rows = ((sb // np.uint64(self.P)) % np.uint64(self.rows)).astype(np.int64)
        # the last write to a row wins: keep each row's last occurrence
        _, idx = np.unique(rows[::-1], return_index=True)
        last = sb.size - 1 - idx
        self.mem[rows[last]] = c[last]
        self.written_end = int(sb[-1]) + self.P

    def classify_many(self, qs) -> np.ndarray:
        """Status (uint8) of each query slot against the current ``written_end``."""
        q = np.asarray(qs, dtype=np.uint64).astype(np.int64)      # slots < 2**48
        end = self.written_end
        lo = end - self.depth_slots + self.P
        return np.where(q >= end, STATUS_FUTURE,
                        np.where(q >= lo, STATUS_OK, STATUS_LOST)).astype(np.uint8)

    def query_many(self, qs) -> tuple[np.ndarray, np.ndarray]:
        """``(symbols, statuses)`` (uint8 arrays) for query slots ``qs`` (uint64, < 2**48)."""
        q = np.asarray(qs, dtype=np.uint64)
        status = self.classify_many(q)
        rows = ((q // np.uint64(self.P)) % np.uint64(self.rows)).astype(np.int64)
        lanes = (q % np.uint64(self.P)).astype(np.int64)
        sym = np.where(status == STATUS_OK, self.mem[rows, lanes], 0).astype(np.uint8)
        return sym, status

    def query(self, q: int) -> tuple[int, int]:
        """``(symbol, status)`` of one query slot."""
        sym, status = self.query_many(np.array([q], dtype=np.uint64))
        return int(sym[0]), int(status[0])
