"""Statistics counters and their snapshot shadows in block RAM.

:class:`CounterRam` keeps ``n_counters`` wide counters (``width`` bits, wrapping) in a
simple dual-port memory (``live``) and their snapshot values in a second one (``shadow``),
so that a few dozen 48-bit counters cost a few block RAMs and a few hundred logic cells
instead of two flip-flops per counter bit and a wide register read multiplexer.

Design
------
* **Accumulators.** Counter ``i`` has a small register ``acc[i]`` that adds ``inc[i]``
  every clock. Its width is ``bits(ceil(N / min_gap[i]) * max_increment[i])``,
  ``N = max(n_counters, 3)`` words: it is emptied every ``N`` clocks, whatever else happens
  (below), and a counter whose increments are at least ``min_gap[i]`` clocks apart (a
  contract of the user, like ``max_increment``) gets at most ``ceil(N / min_gap[i])`` of
  them in that time.
* **Flusher.** A pointer visits the words round robin, one per clock, without pause. A
  visit takes ``acc[p]`` (which restarts with this clock's increment) and adds it to the RAM
  word by a pipelined read-modify-write: read issued in the visit clock (A), read data
  registered (B), sum written (C). A word is visited again ``N >= 3`` clocks later, after
  its write (no read-after-write hazard, no forwarding).
* **Snapshot.** At an accepted ``snapshot`` in clock ``T`` every accumulator is copied into
  a hold register ``hold[i]`` (the word visited in ``T`` gets 0: its accumulator is already
  in the pipeline) and restarts. The next ``N`` visits (clocks ``T+1 .. T+N``, each word
  once) form the sweep: ``shadow[p] = live[p] + hold[p]`` is the counter's value before
  clock ``T``, exactly, and ``live[p] += hold[p] + acc[p]`` flushes both (``live[p] = acc[p]``
  if the sweep also clears the word). The flusher never
  pauses, so ``hold + acc`` also spans at most ``N`` clocks of increments.
* **Clear.** An accepted ``clear`` (one bit per group of counters) zeroes the accumulators
  of the cleared groups in clock ``T`` (the increment of clock ``T`` is dropped) and the
  sweep writes ``live[p] = acc[p]`` (the increments after ``T``) for those words. With
  ``snapshot`` in the same clock, the shadows get the values before the clear.
* **Reset.** The first clock after reset starts a sweep that zeroes every counter (all
  groups) and every shadow, so a reset zeroes the counters even though a reset does not
  touch block RAM contents; the increments from the first clock on are counted.
* **Busy.** ``busy`` is high from a request clock (combinationally) until the sweep's last
  write (``N + 2`` clocks after it). A ``snapshot`` or ``clear`` presented while a sweep is
  in progress (``busy`` high but not only because of the request itself) is **ignored**:
  users wait for ``busy`` low (through the register bank's ``busy``, the host link issues
  no register write while it is high and acknowledges a write only once it is low, so host
  commands never overlap a sweep, the one after reset included).
* **Read port.** ``r_en``/``r_addr`` in clock ``c``, ``r_data`` = ``shadow[r_addr]`` in
  clock ``c + 1`` (the block RAM's own output register), kept until the next ``r_en``. A
  read during a sweep returns an undefined value (the word may be written in that clock:
  ``hdl/bram.py``); a read issued when ``busy`` is low returns the complete last snapshot.

Value semantics (what the tests check against a plain counter model): every counter and
shadow is 0 after reset; counter ``i`` after clock ``c`` is 0 if its group is cleared in ``c``,
else its value after ``c - 1`` plus ``inc[i]`` of clock ``c``, modulo ``2**width`` (the same as
a register ``counter <= clear ? 0 : counter + inc``); a snapshot in clock ``T`` stores the
values after clock ``T - 1`` (the register values in clock ``T``).
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from .bram import bram, read_port

__all__ = ["CounterRam", "drive_one_clock_late"]

MIN_WORDS = 3   # pipeline depth of the read-modify-write: a word is revisited after >= 3 clocks


def _positive_int(name, v, lo=1, hi=None):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        raise ValueError(f"{name} must be an integer in [{lo}, {hi if hi is not None else 'inf'}], not {v!r}")


def _per_counter(name, value, n, lo=1, hi=None) -> tuple:
    """``value`` (one int for all, or one per counter) as a checked tuple of ``n`` ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries, expected n_counters = {n}")
    for i, v in enumerate(value):
        _positive_int(f"{name}[{i}]", v, lo, hi)
    return value


def drive_one_clock_late(m: Module, cram: "CounterRam", incs, clear, snapshot) -> None:
    """Drive ``cram``'s ``inc`` (one value per counter, in order), ``clear`` and ``snapshot``
    through one register stage, all delayed alike, so the counted values are unchanged (a
    timing stage in front of the accumulators). The caller's ``busy`` must still include the
    undelayed ``clear`` and ``snapshot``, so a command counts as busy from its own clock."""
    cmd_clear = Signal(len(cram.clear), name="cmd_clear")
    cmd_snapshot = Signal(name="cmd_snapshot")
    m.d.sync += [cmd_clear.eq(clear), cmd_snapshot.eq(snapshot)]
    for w, v in enumerate(incs):
        inc_r = Signal.like(cram.inc[w], name=f"inc_r{w}")
        m.d.sync += inc_r.eq(v)
        m.d.comb += cram.inc[w].eq(inc_r)
    m.d.comb += [cram.clear.eq(cmd_clear), cram.snapshot.eq(cmd_snapshot)]


class CounterRam(wiring.Component):
    """``n_counters`` counters of ``width`` bits in block RAM, with snapshot shadows.

    Parameters
    ----------
    n_counters : int
        Number of counters (>= 1).
    width : int
        Counter width, bits (1..64); counters wrap modulo ``2**width``.
    max_increment : int or sequence of int
        Largest ``inc[i]`` per clock, for all counters or per counter (>= 1). Larger
        increments are not allowed (the accumulators are sized from this).
    groups : sequence of int or None
        Clear group of each counter (default: all in group 0); ``clear`` has one bit per
        group ``0 .. max(groups)``.
    min_gap : int or sequence of int
        Fewest clocks between two non-zero increments, for all counters or per counter
        (>= 1, default 1); sizes the accumulators of rare events.

    Ports
    -----
    inc : In(ArrayLayout(unsigned(bits(max(max_increment))), n_counters))
        Increment of each counter this clock.
    clear : In(n_groups)
        Zero the counters of each set group (ignored during a sweep, see ``busy``).
    snapshot : In(1)
        Copy every counter's value into its shadow (ignored during a sweep).
    busy : Out(1)
        A request is presented or a sweep is in progress.
    r_en, r_addr : In(1), In(range(n_counters))
        Shadow read request.
    r_data : Out(width)
        Shadow word, valid the clock after ``r_en``, held until the next ``r_en``.
    """

    def __init__(self, n_counters: int, width: int = 48, max_increment=1, groups=None, min_gap=1):
        _positive_int("n_counters", n_counters)
        _positive_int("width", width, 1, 64)
        n = n_counters
        max_increment = _per_counter("max_increment", max_increment, n)
        groups = _per_counter("groups", 0 if groups is None else groups, n, lo=0, hi=31)
        min_gap = _per_counter("min_gap", min_gap, n)
        self.n_counters = n
        self.width = width
        self.max_increment = max_increment
        self.groups = groups
        self.n_groups = max(groups) + 1
        self.n_words = max(n, MIN_WORDS)
        #: accumulator width of each counter, bits
        self.min_gap = min_gap
        self.acc_bits = tuple(bits_for(-(-self.n_words // g) * v) for g, v in zip(min_gap, max_increment))
        super().__init__({
            "inc": In(data.ArrayLayout(bits_for(max(max_increment)), n)),
            "clear": In(self.n_groups),
            "snapshot": In(1),
            "busy": Out(1),
            "r_en": In(1),
            "r_addr": In(range(n)),
            "r_data": Out(width),
        })

    @property
    def sweep_clocks(self) -> int:
        """Clocks ``busy`` stays high after the request clock."""
        return self.n_words + 2

    def elaborate(self, platform):
        m = Module()
        n, N, W = self.n_counters, self.n_words, self.width
        k = max(self.acc_bits)

        # Collisions (hdl/bram.py): `live` is read at the visited word and written two words
        # behind it (never the same word, N >= 3); `shadow` is written only by a sweep, when
        # the bus does not read it (the host link waits for `busy` to fall).
        m.submodules.live = live = bram(W, N)
        m.submodules.shadow = shadow = bram(W, N)
        live_w, shadow_w = live.write_port(), shadow.write_port()
        live_r = read_port(m, live, live_w, platform=platform, name="live_r")
        shadow_r = read_port(m, shadow, shadow_w, platform=platform, name="shadow_r")

        # Shadow read port (bus side).
        m.d.comb += [shadow_r.addr.eq(self.r_addr), shadow_r.en.eq(self.r_en), self.r_data.eq(shadow_r.data)]

        # Sweep control.
        boot = Signal(init=1)            # reset sweep request (first clock after reset)
        left = Signal(range(N + 1))      # visits of the running sweep still to issue
        sw_snap = Signal()               # the running sweep writes shadows
        sw_zero = Signal(self.n_groups)  # ... zeroes these groups
        sw_boot = Signal()               # ... is the reset sweep (zero all, shadows too)
        b_sweep = Signal()
        c_sweep = Signal()
        sweeping = Signal()
        m.d.comb += sweeping.eq((left != 0) | b_sweep | c_sweep)
        req_snap = Signal()
        req_clear = Signal(self.n_groups)
        accept = Signal()
        m.d.comb += [
            accept.eq(~sweeping & (boot | self.snapshot | self.clear.any())),
            req_snap.eq(self.snapshot & ~boot),
            req_clear.eq(Mux(boot, (1 << self.n_groups) - 1, self.clear)),
            self.busy.eq(sweeping | boot | self.snapshot | self.clear.any()),
        ]
        with m.If(accept):
            m.d.sync += [left.eq(N), sw_snap.eq(req_snap), sw_zero.eq(req_clear), sw_boot.eq(boot),
                         boot.eq(0)]
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)

        # Stage A: visit word `ptr`.
        ptr = Signal(range(N))
        m.d.sync += ptr.eq(Mux(ptr == N - 1, 0, ptr + 1))
        in_sweep = Signal()
        m.d.comb += [in_sweep.eq(left != 0), live_r.addr.eq(ptr)]

        acc = [Signal(self.acc_bits[i], name=f"acc{i}") for i in range(n)]
        hold = [Signal(self.acc_bits[i], name=f"hold{i}") for i in range(n)]
        acc_p = Signal(k)
        hold_p = Signal(k)
        if N > n:   # padding words: nothing to take
            acc_arr = Array(acc + [Const(0, 1)] * (N - n))
            hold_arr = Array(hold + [Const(0, 1)] * (N - n))
        else:
            acc_arr, hold_arr = Array(acc), Array(hold)
        m.d.comb += [acc_p.eq(acc_arr[ptr]), hold_p.eq(Mux(in_sweep & sw_snap, hold_arr[ptr], 0))]
        group_of_ptr = Signal(range(self.n_groups)) if self.n_groups > 1 else Const(0, 1)
        if self.n_groups > 1:
            with m.Switch(ptr):
                for i, g in enumerate(self.groups):
                    with m.Case(i):
                        m.d.comb += group_of_ptr.eq(g)
        zero_p = Signal()
        m.d.comb += zero_p.eq(in_sweep & (sw_boot | sw_zero.bit_select(group_of_ptr, 1)))

        snap_now = accept & req_snap
        for i in range(n):
            cleared = accept & ~boot & self.clear[self.groups[i]]   # reset: acc is 0 already
            take = (ptr == i) | snap_now
            with m.If(cleared):
                m.d.sync += acc[i].eq(0)
            with m.Elif(take):
                m.d.sync += acc[i].eq(self.inc[i])
            with m.Else():
                m.d.sync += acc[i].eq(acc[i] + self.inc[i])
            with m.If(snap_now):
                m.d.sync += hold[i].eq(Mux(ptr == i, 0, acc[i]))

        # Stage B: read data arrives; register it with the visit's values.
        # (the selected accumulator and hold are registered as they are; their sum is formed
        # in stage B, so stage A is only the selection)
        b_addr = Signal(range(N))
        b_acc = Signal(k)
        b_hold_sum = Signal(k)
        b_hold = Signal(k)
        b_zero = Signal()
        b_snap = Signal()
        b_boot = Signal()
        m.d.sync += [
            b_addr.eq(ptr), b_acc.eq(acc_p), b_hold_sum.eq(Mux(zero_p, 0, hold_p)), b_hold.eq(hold_p),
            b_zero.eq(zero_p),
            b_snap.eq(in_sweep & sw_snap), b_boot.eq(in_sweep & sw_boot), b_sweep.eq(in_sweep),
        ]
        b_sum = Signal(k)
        m.d.comb += b_sum.eq(b_acc + b_hold_sum)
        c_addr = Signal(range(N))
        c_rd = Signal(W)
        c_sum = Signal(k)
        c_hold = Signal(k)
        c_zero = Signal()
        c_snap = Signal()
        c_boot = Signal()
        m.d.sync += [
            c_addr.eq(b_addr), c_rd.eq(live_r.data), c_sum.eq(b_sum), c_hold.eq(b_hold),
            c_zero.eq(b_zero), c_snap.eq(b_snap), c_boot.eq(b_boot), c_sweep.eq(b_sweep),
        ]

        # Stage C: write the sums.
        m.d.comb += [
            live_w.addr.eq(c_addr),
            live_w.en.eq(1),
            live_w.data.eq(Mux(c_zero, 0, c_rd) + c_sum),
            shadow_w.addr.eq(c_addr),
            shadow_w.en.eq(c_snap | c_boot),
            shadow_w.data.eq(Mux(c_boot, 0, c_rd + c_hold)),
        ]
        return m
