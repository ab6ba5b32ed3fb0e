"""Time tagger: detector sample words -> per-clock live edge, slot lane, fine time, gate.

See ``docs/receiver.md`` ("Time tagger"). ``S`` samples per clock, ``P`` slots per clock,
``K = S // P`` samples per slot; bit 0 of a sample word is the earliest sample. Per channel
``c``, with the absolute sample time ``T = clock * S + i``:

1. fine delay ``x'[T] = x[T - d]``, ``d = min(delay[c], max_delay_samples)``; samples before
   the first clock after reset are 0. The previous sample of in-clock sample 0 is the last
   sample of the previous clock's delayed word (this only matters when ``delay`` changes);
2. rising edges ``e[T] = x'[T] & ~x'[T-1]``;
3. dead time: an edge is *live* unless ``T < T0 + dead_eff`` for the previous live edge
   ``T0``, ``dead_eff = max(dead_samples, S)`` taken at ``T0``'s clock; so at most one edge
   per clock is live, the first one at or after the channel's live point. After reset no
   edge was seen;
4. a live edge at in-clock sample ``i`` has lane ``i // K`` and fine time ``f = i % K``; it
   is a *click* iff ``gate_offset <= f < gate_offset + gate_width``, else *out of gate*.

Every register input is taken together with the sample word of the same clock, so the model
accepts per-clock register values. All outputs are registered, ``LATENCY`` clocks after the
input word; ``lane`` and ``fine`` are 0 when ``live`` is 0.

Gateware, three registered stages (``LATENCY = 3``): (1) a barrel shifter over the last
``ceil(max_delay / S)`` raw words and the edge detector; (2) for every possible live point
``L`` in [0, S), the first edge at or after ``L`` (priority encoders over the edge mask) and
the counter value ``dead_eff - S + i`` that this edge ``i`` would load, and the edge count;
(3) per channel a 16-bit down-counter ``rem`` of the remaining dead samples from the start of
the clock, with a registered flag ``rem >= S`` (the whole clock is dead: ``rem -= S``);
otherwise the live point is ``rem`` and ``rem`` loads the stage-2 value for that point (0 if
there is no edge). The dead-time loop is one ``S:1`` multiplexer and a ``2:1`` one deep.
"""
import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, exact_log2

from .pulses import check_geometry

__all__ = ["TimeTagger", "timetagger_model", "DEAD_BITS", "GATE_BITS"]

DEAD_BITS = 16       # width of the dead_samples register
GATE_BITS = 4        # width of gate_offset / gate_width


def _max_delay(S: int, max_delay_samples) -> int:
    """Validate ``max_delay_samples`` (default ``4*S - 1``), in samples."""
    if max_delay_samples is None:
        return 4 * S - 1
    if isinstance(max_delay_samples, bool) or int(max_delay_samples) != max_delay_samples \
            or max_delay_samples < 0:
        raise ValueError(f"max_delay_samples must be a non-negative integer, "
                         f"not {max_delay_samples!r}")
    return int(max_delay_samples)


def _select(items, sel):
    """``items[sel]`` for a list of values (or the bits of a value); a plain S:1 mux."""
    items = list(items)
    if len(items) == 1:
        return items[0]
    return Array(items)[sel]


def _or(values):
    """OR of an iterable of values."""
    values = list(values)
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out


def _popcount(v):
    """Adder tree over the bits of ``v``."""
    terms = [v[i] for i in range(len(v))]
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
    return terms[0]


class TimeTagger(wiring.Component):
    """Time tagger for ``channels`` detector channels.

    Parameters
    ----------
    samples_per_clock, slots_per_clock : int
        ``S`` in {1, 2, 4, 8}, ``P`` in {1, 2, 4} dividing ``S``.
    channels : int
        Number of detector channels (4 for a detector group, 1 for sync).
    max_delay_samples : int or None
        Largest fine delay in samples (default ``4*S - 1``); larger ``delay`` values saturate.

    Ports (per channel ``c``, outputs registered, ``LATENCY`` clocks after ``samples``)
    -----
    samples : In(ArrayLayout(unsigned(S), channels))
        Detector sample words, bit 0 earliest.
    delay : In(ArrayLayout(unsigned(bits_for(max_delay_samples)), channels))
        Fine delay per channel, samples.
    gate_offset, gate_width : In(4)
        Gate window in fine-time units (samples within the slot); width 0 gates nothing.
    dead_samples : In(16)
        Detector dead time, samples; ``dead_eff = max(dead_samples, S)``.
    live, click, out_of_gate : Out(ArrayLayout(1, channels))
        A live edge this clock; it is in the gate; it is outside the gate.
    lane : Out(ArrayLayout(unsigned(max(1, bits for P-1)), channels))
        Slot lane ``i // K`` of the live edge (0 if none).
    fine : Out(ArrayLayout(unsigned(3), channels))
        Fine time ``i % K`` of the live edge, samples (0 if none).
    edges, suppressed : Out(ArrayLayout(range(S+1), channels))
        Rising edges this clock (after the delay); those of them that are not live.
    """

    LATENCY = 3

    def __init__(self, samples_per_clock: int, slots_per_clock: int, channels: int,
                 max_delay_samples=None):
        self.K = check_geometry(samples_per_clock, slots_per_clock)
        if isinstance(channels, bool) or int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, not {channels!r}")
        self.S = samples_per_clock
        self.P = slots_per_clock
        self.channels = int(channels)
        self.max_delay = _max_delay(samples_per_clock, max_delay_samples)
        S, P, C = self.S, self.P, self.channels
        count = unsigned(bits_for(S))
        super().__init__({
            "samples": In(data.ArrayLayout(unsigned(S), C)),
            "delay": In(data.ArrayLayout(unsigned(bits_for(self.max_delay)), C)),
            "gate_offset": In(GATE_BITS),
            "gate_width": In(GATE_BITS),
            "dead_samples": In(DEAD_BITS),
            "live": Out(data.ArrayLayout(1, C)),
            "click": Out(data.ArrayLayout(1, C)),
            "lane": Out(data.ArrayLayout(unsigned(max(1, bits_for(P - 1))), C)),
            "fine": Out(data.ArrayLayout(unsigned(3), C)),
            "edges": Out(data.ArrayLayout(count, C)),
            "suppressed": Out(data.ArrayLayout(count, C)),
            "out_of_gate": Out(data.ArrayLayout(1, C)),
        })

    def elaborate(self, platform):
        m = Module()
        S, K, D = self.S, self.K, self.max_delay
        log_s, log_k = exact_log2(S), exact_log2(K)
        words = -(-D // S)                      # raw history words the delay can reach back

        # ---- shared register pipeline: each value travels with its clock's sample word
        # in_gate[i]: fine time i % K is inside the gate window (registered twice)
        in_gate1, in_gate = Signal(S), Signal(S)
        end = self.gate_offset + self.gate_width
        m.d.sync += [in_gate1.eq(Cat((self.gate_offset <= i % K) & (i % K < end)
                                     for i in range(S))),
                     in_gate.eq(in_gate1)]
        # stage 1: reload[i] = dead_eff - S + i, the remaining dead samples at the start of the
        # next clock after a live edge at in-clock sample i; reload_blk[i] = reload[i] >= S
        reload = [Signal(DEAD_BITS, name=f"reload{i}") for i in range(S)]
        reload_blk = Signal(S)
        dead = self.dead_samples
        for i in range(S):
            m.d.sync += [reload[i].eq(Mux(dead[log_s:].any(), dead + (i - S), i)),  # dead>=S
                         reload_blk[i].eq(dead >= 2 * S - i)]

        for c in range(self.channels):
            # ---- stage 1: fine delay and rising edges
            hist = [Signal(S, name=f"hist{c}_{k}") for k in range(words)]  # hist[0] newest
            m.d.sync += [h.eq(p) for h, p in zip(hist, [self.samples[c], *hist[:-1]])]
            window = Cat(*reversed(hist), self.samples[c])      # sample T - k*S at k*S below
            d = Signal(range(D + 1), name=f"d{c}")
            raw = self.delay[c]
            m.d.comb += d.eq(Mux(raw > D, D, raw) if (1 << len(raw)) - 1 > D else raw)
            x = Signal(S, name=f"x{c}")                          # delayed word
            m.d.comb += x.eq((window << d)[words * S:words * S + S])   # log shifter
            last = Signal(name=f"last{c}")                      # previous delayed sample
            m.d.sync += last.eq(x[S - 1])
            edges = Signal(S, name=f"edges{c}")
            m.d.sync += edges.eq(x & ~Cat(last, x[:S - 1]))

            # ---- stage 2: for every possible live point L, the first edge at or after L
            # (one-hot, from priority encoders over the edge mask) and the dead-time counter
            # it would load
            has = Signal(S, name=f"has{c}")                    # has[L]: an edge at >= L
            first = [Signal(max(1, log_s), name=f"first{c}_{L}") for L in range(S)]
            nxt = [Signal(DEAD_BITS, name=f"nxt{c}_{L}") for L in range(S)]
            nxt_blk = Signal(S, name=f"nxt_blk{c}")
            n_edges = Signal(range(S + 1), name=f"n_edges{c}")
            m.d.sync += [has.eq(Cat(edges[L:].any() for L in range(S))),
                         n_edges.eq(_popcount(edges))]
            for L in range(S):
                onehot = {i: edges[i] & ~edges[L:i].any() for i in range(L, S)}
                m.d.sync += [
                    first[L].eq(Cat(Cat(h for i, h in onehot.items() if i >> b & 1).any()
                                    for b in range(log_s))),
                    nxt[L].eq(_or(h.replicate(DEAD_BITS) & reload[i]
                                  for i, h in onehot.items())),
                    nxt_blk[L].eq(_or(h & reload_blk[i] for i, h in onehot.items())),
                ]

            # ---- stage 3: dead time. rem counts the remaining dead samples from the start
            # of the clock; blk = rem >= S (the whole clock is dead), else the live point is
            # rem. The loop is one S:1 multiplexer and a 2:1 one.
            rem = Signal(DEAD_BITS, name=f"rem{c}")
            blk = Signal(name=f"blk{c}")
            point = rem[:log_s]
            live = Signal(name=f"live{c}")
            idx = Signal(max(1, log_s), name=f"idx{c}")         # sample of the live edge
            m.d.comb += [live.eq(~blk & _select(has, point)),
                         idx.eq(_select(first, point))]
            with m.If(blk):
                m.d.sync += [rem.eq(rem - S), blk.eq(rem[log_s + 1:].any())]   # rem >= 2S
            with m.Else():                                      # 0 if no edge at >= point
                m.d.sync += [rem.eq(_select(nxt, point)), blk.eq(_select(nxt_blk, point))]
            fine_pos = Mux(live, idx, 0)
            hit = live & _select(in_gate, idx)
            m.d.sync += [
                self.live[c].eq(live),
                self.click[c].eq(hit),
                self.out_of_gate[c].eq(live & ~hit),
                self.lane[c].eq(fine_pos[log_k:log_s]),
                self.fine[c].eq(fine_pos[:log_k]),
                self.edges[c].eq(n_edges),
                self.suppressed[c].eq(n_edges - live),
            ]
        return m


_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)


def _per_clock(name, value, n, shape=()):
    """A register value: scalar (or ``shape``), or one per clock ``(n, *shape)``; int64."""
    v = np.asarray(value, dtype=np.int64)
    if v.shape != shape and v.shape != (n, *shape):
        raise ValueError(f"{name} must have shape {shape or 'scalar'} or {(n, *shape)}, "
                         f"got {v.shape}")
    if (v < 0).any():
        raise ValueError(f"{name} must be non-negative")
    return v


def _delayed(x, d, S):
    """Delayed words ``x'_t = (x_{t-q} << r | x_{t-q-1} >> (S - r)) & mask``, ``d = q*S + r``.

    ``x``: (n,) uint8 words of one channel; ``d``: scalar or (n,) delays, samples.
    """
    n = len(x)
    q, r = np.divmod(d, S)
    if np.ndim(d) == 0:
        pad = np.concatenate([np.zeros(q + 1, dtype=np.uint8), x])
        hi, lo = pad[1:n + 1], pad[:n]                      # x_{t-q}, x_{t-q-1}
    else:
        src = np.arange(n) - q
        pad = np.concatenate([np.zeros(1, dtype=np.uint8), x])
        hi = pad[np.maximum(src + 1, 0)]                    # index 0 is a zero word
        lo = pad[np.maximum(src, 0)]
    r = np.asarray(r, dtype=np.uint8)
    return ((hi << r) | (lo >> (np.uint8(S) - r))) & np.uint8((1 << S) - 1)


def timetagger_model(S: int, P: int, samples, delay, gate_offset, gate_width, dead_samples,
                     max_delay_samples=None) -> dict:
    """Model of :class:`TimeTagger` over ``n`` input clocks from reset.

    ``samples``: (n, channels) words of ``S`` bits; ``delay``: (channels,) or
    (n, channels) samples (saturating at ``max_delay_samples``, default ``4*S - 1``);
    ``gate_offset``, ``gate_width``, ``dead_samples``: scalars or (n,) arrays (the value at
    each input clock). Returns arrays (n, channels) indexed by input clock (no latency):
    ``live``, ``click``, ``out_of_gate`` (bool), ``lane``, ``fine``, ``edges``,
    ``suppressed`` (int64). Vectorised except for a loop over the edges for the dead time.
    """
    K = check_geometry(S, P)
    dmax = _max_delay(S, max_delay_samples)
    x = np.asarray(samples)
    if x.ndim != 2:
        raise ValueError(f"samples must be (n, channels), got shape {x.shape}")
    if x.size and (x.min() < 0 or x.max() >= 1 << S):
        raise ValueError(f"samples must be {S}-bit words")
    n, C = x.shape
    x = x.astype(np.uint8)
    d = np.minimum(_per_clock("delay", delay, n, (C,)), dmax)
    go = _per_clock("gate_offset", gate_offset, n)
    gw = _per_clock("gate_width", gate_width, n)
    dead_eff = np.maximum(_per_clock("dead_samples", dead_samples, n), S)
    out = {k: np.zeros((n, C), dtype=np.int64) for k in ("lane", "fine", "edges", "suppressed")}
    out.update({k: np.zeros((n, C), dtype=bool) for k in ("live", "click", "out_of_gate")})
    shifts = np.arange(S, dtype=np.uint8)

    for c in range(C):
        xd = _delayed(np.ascontiguousarray(x[:, c]), d[..., c], S)
        prev = np.empty_like(xd)                            # x'[T-1] at each in-clock sample
        prev[0] = 0
        prev[1:] = xd[:-1] >> np.uint8(S - 1)
        e = xd & ~((xd << np.uint8(1)) | prev)
        tc = np.flatnonzero(e)                              # clocks with edges
        rows, cols = np.nonzero((e[tc, None] >> shifts) & np.uint8(1))
        clock = tc[rows]
        times = (clock * S + cols).tolist()
        dead = (dead_eff[clock] if dead_eff.ndim else np.broadcast_to(dead_eff, clock.shape))
        live = []
        ready = 0                                           # earliest time of a live edge
        for k, (tk, dk) in enumerate(zip(times, dead.tolist())):
            if tk >= ready:
                live.append(k)
                ready = tk + dk
        live = np.asarray(live, dtype=np.intp)
        tl, i = clock[live], cols[live]
        fine = i % K
        g0 = go[tl] if go.ndim else go
        click = (g0 <= fine) & (fine < g0 + (gw[tl] if gw.ndim else gw))
        out["edges"][tc, c] = _POPCOUNT[e[tc]]
        out["live"][tl, c] = True
        out["lane"][tl, c] = i // K
        out["fine"][tl, c] = fine
        out["click"][tl, c] = click
        out["out_of_gate"][tl, c] = ~click
        out["suppressed"][tc, c] = out["edges"][tc, c]
        out["suppressed"][tl, c] -= 1
    return out
