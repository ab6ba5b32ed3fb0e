"""Event counters in block RAM that are read live (not through a snapshot).

:class:`LiveCounters` keeps ``n_counters`` counters of ``width`` bits (wrapping) that each
count at most one event per clock, for rare events: the host link's frame and error
counters. Nine 32-bit counters as flip-flops with incrementers and read-multiplexer inputs
cost the iCE40UP5K about 536 logic cells; in a RAM they measured about 100 cells fewer (the
pending counts, the two 32-bit adders and the read registers cost most of the difference).

Design
------
* **Pending counts.** Counter ``i`` has a ``pending_bits`` register ``pend[i]`` that counts
  its events one clock late (through a register ``inc_r``); its value is always
  ``ram[i] + pend[i] + inc_r[i]`` (modulo ``2**width``).
* **Flusher.** A pointer visits the counters round robin, one per clock: read ``ram[p]``
  and register ``pend[p] + inc_r[p]`` (clock A), write ``ram[p] = data + that`` and restart
  ``pend[p]`` with ``inc_r[p]`` of this clock (B). Between A and B no other write touches
  word ``p`` (``n_words >= 2``), and ``pend[p]`` is only emptied in the clock the sum is
  written, so ``ram + pend + inc_r`` is the count in every clock. A clock with a read
  request (below) lends the RAM read port to the reader; the flusher skips its visit and
  stays on its word. A read in the clock of a write (B) cancels the write (``pend[p]``
  keeps counting, the word is flushed on the next round), so the RAM is never read and
  written at one address in one clock (``hdl/bram.py``: the colliding word is undefined).
* **Read port.** ``r_en``/``r_addr`` in clock ``X``: ``r_data`` in clock ``X + 2`` is the
  count after clock ``X``'s events (``ram[r_addr]`` before clock ``X``'s write, plus
  ``pend`` and ``inc_r`` in clock ``X``, plus clock ``X``'s event), that is the value a
  flip-flop counter has in clock ``X + 1``. The RAM output and the small pending value are
  registered in clock ``X + 1`` and added in ``X + 2`` (no adder behind the block RAM's
  clock-to-out).
  ``r_data`` holds until the next read's result.
* **Bound.** With at most one event per counter every ``min_event_gap`` clocks and read
  bursts of at most ``max_read_burst`` consecutive clocks, ``pend`` never exceeds
  ``ceil((3 n_words + 2 max_read_burst + 4) / min_event_gap)`` (the reset sweep
  leaves ``pend`` to grow for one more round, a cancelled write for one more round and
  burst); ``pending_bits`` is sized from
  that (a larger count would wrap ``pend`` and lose counts, so the parameters are a
  contract of the user: the host link's counters count at most once per three clocks, and
  it reads at most 32 registers back to back).
* **Reset** zeroes every word: the first ``n_words`` visits after reset write 0 (the events
  of those clocks are kept in ``pend``); a read in those clocks returns an undefined value
  (the block RAM is not reset; the host link cannot read that early).
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from .bram import bram, read_port

__all__ = ["LiveCounters"]

MIN_WORDS = 2   # read, then write: a word is revisited after its write


class LiveCounters(wiring.Component):
    """``n_counters`` event counters of ``width`` bits in block RAM, read live.

    Ports: ``inc`` (In(n_counters), one event per counter per clock), ``r_en``/``r_addr``
    (In; the request clock) and ``r_data`` (Out(width), two clocks later).
    """

    def __init__(self, n_counters: int, width: int = 32, *, min_event_gap: int = 3, max_read_burst: int = 32):
        for name, v, lo in (("n_counters", n_counters, 1), ("width", width, 1), ("min_event_gap", min_event_gap, 1),
                            ("max_read_burst", max_read_burst, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} = {v!r} must be an integer >= {lo}")
        self.n_counters, self.width = n_counters, width
        self.n_words = max(n_counters, MIN_WORDS)
        worst = -(-(3 * self.n_words + 2 * max_read_burst + 4) // min_event_gap)
        #: width of the pending counts, bits
        self.pending_bits = bits_for(worst + 1)
        self._mem = bram(width, self.n_words)
        self._pend = [Signal(self.pending_bits, name=f"pend{i}") for i in range(n_counters)]
        self._inc_r = Signal(n_counters, name="inc_r")
        super().__init__({
            "inc": In(n_counters),
            "r_en": In(1),
            "r_addr": In(range(self.n_words)),
            "r_data": Out(width),
        })

    def peek(self, ctx) -> list[int]:
        """The counts now, from a simulator testbench context (tests only)."""
        mask = (1 << self.width) - 1
        inc_r = ctx.get(self._inc_r)
        return [(ctx.get(self._mem.data[i]) + ctx.get(p) + (inc_r >> i & 1)) & mask for i, p in enumerate(self._pend)]

    def elaborate(self, platform):
        m = Module()
        n, N, W = self.n_counters, self.n_words, self.width
        m.submodules.mem = mem = self._mem
        wr = mem.write_port()
        rd = read_port(m, mem, wr, platform=platform, name="rd")
        pend = self._pend
        pad = [Const(0, 1)] * (N - n)
        # The events enter `pend` one clock late (`inc_r`), so no path runs from the event
        # logic through a multiplexer and an adder; the reader adds the event of its own clock.
        inc_r = self._inc_r
        m.d.sync += inc_r.eq(self.inc)

        # Flusher: A (visit `ptr` unless the reader has the port), B (write).
        ptr = Signal(range(N))
        booting = Signal(init=1)                 # the first sweep after reset writes zeros
        boot_left = Signal(range(N + 1), init=N)
        visit = Signal()
        m.d.comb += [visit.eq(~self.r_en), rd.addr.eq(Mux(self.r_en, self.r_addr, ptr)), rd.en.eq(1)]
        with m.If(visit):
            m.d.sync += ptr.eq(Mux(ptr == N - 1, 0, ptr + 1))
        b_valid, b_addr, b_boot = Signal(), Signal(range(N)), Signal()
        # pend[b_addr] in B is pend[ptr] + inc_r[ptr] of A (only B restarts a pend, and B is on
        # the previous word in A): selected and registered in A, so B is one adder deep.
        pend_b = Signal(self.pending_bits)
        m.d.sync += [b_valid.eq(visit), b_addr.eq(ptr), b_boot.eq(booting),
                     pend_b.eq(Array(pend + pad)[ptr] + Array(list(inc_r) + pad)[ptr])]
        with m.If(visit & booting):
            m.d.sync += boot_left.eq(boot_left - 1)
            with m.If(boot_left == 1):
                m.d.sync += booting.eq(0)
        # A read in B cancels the write (it might address the word; not in the reset sweep,
        # whose reads are undefined anyway): pend keeps the count, the next round flushes it.
        flush = Signal()
        m.d.comb += [
            flush.eq(b_valid & (~self.r_en | b_boot)),
            wr.addr.eq(b_addr),
            wr.en.eq(flush),
            wr.data.eq(Mux(b_boot, 0, rd.data + pend_b)),
        ]
        for i in range(n):
            with m.If(flush & (b_addr == i) & ~b_boot):
                m.d.sync += pend[i].eq(inc_r[i])
            with m.Else():
                m.d.sync += pend[i].eq(pend[i] + inc_r[i])

        # Reader: in X the pending count, the late event and this clock's event are registered
        # (multiplexers only); in X + 1 their sum and the RAM word; added in X + 2.
        r_pend = Signal(self.pending_bits)
        r_inc_r = Signal()
        r_inc = Signal()
        r_small1 = Signal(self.pending_bits + 2)
        r_word1 = Signal(W)
        r_first = Signal()
        with m.If(self.r_en):
            m.d.sync += [r_pend.eq(Array(pend + pad)[self.r_addr]),
                         r_inc_r.eq(Array(list(inc_r) + pad)[self.r_addr]),
                         r_inc.eq(Array(list(self.inc) + pad)[self.r_addr])]
        m.d.sync += r_first.eq(self.r_en)
        with m.If(r_first):
            m.d.sync += [r_small1.eq(r_pend + r_inc_r + r_inc), r_word1.eq(rd.data)]
        m.d.comb += self.r_data.eq(r_word1 + r_small1)
        return m
