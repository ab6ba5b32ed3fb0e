"""TimeTagger gateware vs timetagger_model, hand-written cases that pin docs/receiver.md."""
import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator
from amaranth.utils import bits_for

from qkdlink.hdl.timetagger import TimeTagger, timetagger_model

OUTPUTS = ("live", "click", "lane", "fine", "edges", "suppressed", "out_of_gate")
MAX_CYCLES = 3000


def simulate(dut, words, delay, gate_offset, gate_width, dead_samples):
    """Run ``dut`` on (n, channels) ``words`` with per-clock registers; outputs by input clock."""
    n, C = words.shape
    S, L = dut.S, dut.LATENCY
    dbits = len(dut.delay[0])
    delay = np.broadcast_to(np.asarray(delay), (n, C))
    regs = [np.broadcast_to(np.asarray(v), (n,)) for v in (gate_offset, gate_width, dead_samples)]
    sample_in = [sum(int(words[t, c]) << (c * S) for c in range(C)) for t in range(n)]
    delay_in = [sum(int(delay[t, c]) << (c * dbits) for c in range(C)) for t in range(n)]
    ports = [getattr(dut, k) for k in OUTPUTS]
    widths = [len(p.as_value()) // C for p in ports]
    raw = np.zeros((n + L, len(OUTPUTS)), dtype=object)

    async def tb(ctx):
        for t in range(n + L):
            if t < n:
                ctx.set(dut.samples.as_value(), sample_in[t])
                ctx.set(dut.delay.as_value(), delay_in[t])
                ctx.set(dut.gate_offset, int(regs[0][t]))
                ctx.set(dut.gate_width, int(regs[1][t]))
                ctx.set(dut.dead_samples, int(regs[2][t]))
            await ctx.tick()
            raw[t] = [ctx.get(p.as_value()) for p in ports]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    got = {}
    for k, (name, w) in enumerate(zip(OUTPUTS, widths)):
        v = raw[L - 1:L - 1 + n, k]
        got[name] = np.array([[(int(x) >> (c * w)) & ((1 << w) - 1) for c in range(C)] for x in v],
                             dtype=np.int64)
    return got


def compare(got, want, context=None):
    for k in OUTPUTS:
        bad = np.flatnonzero((got[k] != want[k]).any(axis=1))
        assert bad.size == 0, (k, context and [context(int(t)) for t in bad[:3]],
                               [(int(t), got[k][t].tolist(), want[k][t].astype(int).tolist())
                                for t in bad[:5]])


def pack(bits, S):
    """(n*S, channels) sample bits in time order -> (n, channels) words."""
    b = np.asarray(bits, dtype=np.uint64)
    b = b.reshape(-1, S, b.shape[1])
    return (b << np.arange(S, dtype=np.uint64)[None, :, None]).sum(axis=1)


def pulses(rng, n_samples, channels, rate, width_max, burst=None):
    """Sample bits (n_samples, channels): pulses starting with probability ``rate`` per sample,
    widths 1..width_max; ``burst = (gap_min, gap_max, count)`` follows each start by a train."""
    bits = np.zeros((n_samples + 64 * width_max + 2048, channels), dtype=bool)
    for c in range(channels):
        starts = np.flatnonzero(rng.random(n_samples) < rate)
        if burst is not None:
            gmin, gmax, count = burst
            gaps = rng.integers(gmin, gmax + 1, size=(len(starts), count)).cumsum(axis=1)
            starts = np.concatenate([starts, (starts[:, None] + gaps).ravel()])
        for s, w in zip(starts, rng.integers(1, width_max + 1, size=len(starts))):
            bits[s:s + w, c] = True
    return bits[:n_samples]


def sweep(n_samples, channels, period):
    """Width-1 pulses every ``period`` samples (coprime to S: every in-clock position)."""
    bits = np.zeros((n_samples, channels), dtype=bool)
    for c in range(channels):
        bits[c::period, c] = True
    return bits


GEOMETRIES = [  # S, P, max_delay_samples (None: 4S - 1); non-powers of two test saturation
    (1, 1, 0), (2, 1, None), (2, 2, 5), (4, 1, None), (4, 2, 9), (4, 4, None),
    (8, 2, None), (8, 4, 20),
]
CHANNELS = 4


@pytest.mark.parametrize("S,P,max_delay", GEOMETRIES)
def test_tagger_matches_model(S, P, max_delay):
    K = S // P
    rng = np.random.default_rng(100 * S + 10 * P + 7)
    dut = TimeTagger(S, P, CHANNELS, max_delay)
    dmax = dut.max_delay
    dreg_max = (1 << bits_for(dmax)) - 1
    deads = [0, S - 1, S, 3 * S + 1, 200, 2 * S + 3, S + 1, 5]
    seg_len = 150
    segs = MAX_CYCLES // seg_len
    bits, go, gw, dead, delay = [], [], [], [], []
    for k in range(segs):
        kind = k % 6
        ns = seg_len * S
        if kind == 0:                                       # sparse
            b = pulses(rng, ns, CHANNELS, 0.02, 2 * S)
        elif kind == 1:                                     # dense, short pulses
            b = pulses(rng, ns, CHANNELS, 0.3, max(1, S // 2))
            b[:8 * S] = np.arange(8 * S)[:, None] % 2 == 0     # the most edges per clock
        elif kind == 2:                                     # bursts inside the dead time
            b = pulses(rng, ns, CHANNELS, 0.01, 2, burst=(2, max(3, S), 6))
        elif kind == 3:                                     # every in-clock position
            b = sweep(ns, CHANNELS, S + 1 + 2 * (k % 3))
        elif kind == 4:                                     # medium density, long pulses
            b = pulses(rng, ns, CHANNELS, 0.08, 2 * S)
        else:                                               # isolated single-sample pulses
            b = pulses(rng, ns, CHANNELS, 0.05, 1)
        bits.append(b)
        # gate: full, empty, narrow, past the slot end, random (4-bit registers)
        o, w = [(0, K), (0, 0), (K - 1, 1), (max(0, K - 2), 5), (1, 15), (15, 15),
                (int(rng.integers(0, K)), int(rng.integers(1, K + 1)))][k % 7]
        go.append(np.full(seg_len, o))
        gw.append(np.full(seg_len, w))
        # dead time: mostly a listed value; sometimes changed in the middle of the segment
        dv = np.full(seg_len, deads[k % len(deads)])
        if k % 4 == 3:
            dv[seg_len // 2:] = rng.integers(0, 4 * S)
        dead.append(dv)
        # delays: 0, max, above max (saturating), random; sometimes changed mid-segment
        dl = np.tile(rng.integers(0, dreg_max + 1, size=CHANNELS), (seg_len, 1))
        dl[:, k % CHANNELS] = [0, dmax, dreg_max][k % 3]
        if k % 5 == 2:
            dl[seg_len // 3:] = rng.integers(0, dreg_max + 1, size=CHANNELS)
        delay.append(dl)
    words = pack(np.concatenate(bits), S)
    go, gw, dead, delay = (np.concatenate(v) for v in (go, gw, dead, delay))
    n = len(words)
    assert n <= MAX_CYCLES

    want = timetagger_model(S, P, words, delay, go, gw, dead, max_delay_samples=max_delay)
    got = simulate(dut, words, delay, go, gw, dead)
    compare(got, want, lambda t: dict(t=t, delay=delay[t].tolist(), dead=int(dead[t]),
                                      gate=(int(go[t]), int(gw[t]))))

    # the run exercised what it is meant to
    live = want["live"]
    pos = want["lane"][live] * K + want["fine"][live]
    assert set(pos.tolist()) == set(range(S))              # live edges at every position
    assert want["click"].any() and want["out_of_gate"].any()
    assert want["suppressed"].any()
    assert want["edges"].max() == (S + 1) // 2                # rising edges need a 0 before


def spec_model(S, P, words, delay, gate_offset, gate_width, dead_samples, max_delay):
    """docs/receiver.md as worded, one sample at a time; per-clock registers (n,) / (n, C)."""
    n, C = words.shape
    K = S // P
    out = {k: np.zeros((n, C), dtype=np.int64) for k in OUTPUTS}
    for c in range(C):
        x = [int(words[T // S, c]) >> (T % S) & 1 for T in range(n * S)]
        prev, ready = 0, 0
        for T in range(n * S):
            t, i = divmod(T, S)
            src = T - min(int(delay[t, c]), max_delay)
            xd = x[src] if src >= 0 else 0
            edge, prev = xd and not prev, xd
            if not edge:
                continue
            out["edges"][t, c] += 1
            if T >= ready:
                ready = T + max(int(dead_samples[t]), S)
                f = i % K
                click = int(gate_offset[t]) <= f < int(gate_offset[t]) + int(gate_width[t])
                out["live"][t, c], out["lane"][t, c], out["fine"][t, c] = 1, i // K, f
                out["click"][t, c], out["out_of_gate"][t, c] = click, not click
            else:
                out["suppressed"][t, c] += 1
    return out


@pytest.mark.parametrize("S,P,max_delay", GEOMETRIES)
def test_model_matches_spec(S, P, max_delay):
    """The vectorised model against the per-sample reading of the contract."""
    rng = np.random.default_rng(1000 + 10 * S + P)
    n, C = 4800 // S, 3                                   # 4800 samples
    dmax = 4 * S - 1 if max_delay is None else max_delay
    bits = np.concatenate([pulses(rng, n * S // 2, C, 0.15, 2 * S),
                           pulses(rng, n * S // 2, C, 0.02, 3, burst=(2, S + 2, 5))])
    words = pack(bits, S)
    seg = lambda lo, hi, shape=(): np.repeat(rng.integers(lo, hi, size=(n // 50, *shape)),
                                             50, axis=0)
    delay = seg(0, dmax + 4, (C,))
    go, gw, dead = seg(0, 16), seg(0, 16), seg(0, 4 * S + 3)
    want = spec_model(S, P, words, delay, go, gw, dead, dmax)
    got = timetagger_model(S, P, words, delay, go, gw, dead, max_delay_samples=max_delay)
    compare(got, want)
    assert want["live"].sum() > 50 and want["suppressed"].sum() > 20
    # the constant-register forms give the same as per-clock arrays
    got = timetagger_model(S, P, words, delay[0], go[0], gw[0], dead[0], max_delay)
    want = spec_model(S, P, words, np.broadcast_to(delay[0], (n, C)),
                      *(np.full(n, v[0]) for v in (go, gw, dead)), dmax)
    compare(got, want)


# ------------------------------------------------------------------- hand-written cases

def tag(S, P, bits, delay=0, gate=(0, 15), dead=0, max_delay=None):
    """One channel: ``bits`` in time order (string of 0/1 or list of edge sample times)."""
    if isinstance(bits, str):
        b = np.array([int(ch) for ch in bits.replace(" ", "")], dtype=bool)
    else:
        b = np.zeros(max(bits) + 1, dtype=bool)
        b[list(bits)] = True
    b = np.concatenate([b, np.zeros(-len(b) % S + 8 * S, dtype=bool)])[:, None]
    words = pack(b, S)
    n = len(words)
    d = np.atleast_1d(delay)
    d = np.concatenate([d, np.full(n - len(d), d[-1])])[:, None]    # per clock, last repeats
    want = timetagger_model(S, P, words, d, gate[0], gate[1], dead, max_delay_samples=max_delay)
    got = simulate(TimeTagger(S, P, 1, max_delay), words, d, gate[0], gate[1], dead)
    compare(got, want)
    return {k: v[:, 0] for k, v in want.items()}


def live_times(r, S, K):
    t = np.flatnonzero(r["live"])
    return (t * S + r["lane"][t] * K + r["fine"][t]).tolist()


def test_pulse_across_clock_boundary_is_one_edge():
    r = tag(4, 2, "0011 1111 1000 0000")
    assert r["edges"][:4].tolist() == [1, 0, 0, 0]
    assert live_times(r, 4, 2) == [2]
    assert (r["lane"][0], r["fine"][0]) == (1, 0)
    # a pulse starting at sample 0 after a low last sample is an edge
    r = tag(4, 2, "0010 1000")
    assert r["edges"][:2].tolist() == [1, 1]


def test_reset_state():
    # samples before the first clock are 0: a high sample 0 is an edge; no dead time running
    r = tag(4, 1, "1000 0000", dead=200)
    assert live_times(r, 4, 4) == [0]
    r = tag(8, 4, "1111 1111", delay=3)        # delayed: zeros shift in, edge at T = 3
    assert live_times(r, 8, 2) == [3]
    assert r["edges"].sum() == 1


def test_dead_time_boundary():
    S, P, dead = 4, 1, 10
    # an edge exactly dead_eff samples after a live edge is live, one sample earlier is not
    assert live_times(tag(S, P, [0, 10], dead=dead), S, S) == [0, 10]
    r = tag(S, P, [0, 9], dead=dead)
    assert live_times(r, S, S) == [0]
    assert r["suppressed"].sum() == 1 and r["suppressed"][2] == 1
    # a suppressed edge does not restart the dead time
    assert live_times(tag(S, P, [0, 9, 11, 20, 22], dead=dead), S, S) == [0, 11, 22]
    # a burst in the dead time: all suppressed, counted per clock
    r = tag(S, P, [1, 3, 5, 7, 9, 13, 15], dead=12)
    assert live_times(r, S, S) == [1, 13]
    assert r["edges"][:4].tolist() == [2, 2, 1, 2]
    assert r["suppressed"][:4].tolist() == [1, 2, 1, 1]


def test_dead_time_at_least_one_clock():
    # dead_samples < S acts as S: at most one live edge per clock, and an edge S samples later
    for dead in (0, 1, 3, 4):
        r = tag(4, 2, [0, 2, 5, 7], dead=dead)
        assert live_times(r, 4, 2) == [0, 5]                # 2 < 0 + 4, 7 < 5 + 4
        assert r["suppressed"][:2].tolist() == [1, 1]
        r = tag(4, 2, [1, 4, 6], dead=dead)
        assert live_times(r, 4, 2) == [1, 6]                # 4 < 1 + 4 (the next clock)
        assert r["suppressed"][:2].tolist() == [0, 1]
    assert live_times(tag(4, 2, [1, 3, 5], dead=5), 4, 2) == [1]
    assert live_times(tag(1, 1, [0, 2, 4], dead=0), 1, 1) == [0, 2, 4]


def test_gate_window():
    S, P = 8, 2                                              # K = 4
    edges = [0, 4, 9, 13, 18, 27, 37]      # dead_eff = 8: live 0, 9, 18, 27, 37
    def clicks(o, w):
        r = tag(S, P, edges, gate=(o, w), dead=2)
        t = np.flatnonzero(r["live"])
        assert (r["click"] ^ r["out_of_gate"])[t].all() and not r["click"][~r["live"]].any()
        fines = r["fine"][t].tolist()
        return fines, r["click"][t].astype(int).tolist()
    assert clicks(1, 2) == ([0, 1, 2, 3, 1], [0, 1, 1, 0, 1])
    assert clicks(0, 0)[1] == [0] * 5                        # width 0: nothing in gate
    assert clicks(2, 15)[1] == [0, 0, 1, 1, 0]               # offset + width > K
    assert clicks(0, 4)[1] == [1] * 5
    assert clicks(4, 4)[1] == [0] * 5                        # offset past the slot
    r = tag(S, P, [3, 8 + 4], gate=(3, 1), dead=2)           # last sample of lane 0, first of 1
    assert r["click"][:2].tolist() == [1, 0]
    assert (r["lane"][:2].tolist(), r["fine"][:2].tolist()) == ([0, 1], [3, 0])


def test_delay_and_saturation():
    # delay moves the edge across the clock boundary: T = 5 + 3 = 8 -> clock 2, sample 0
    r = tag(4, 2, [5], delay=3)
    assert live_times(r, 4, 2) == [8] and r["live"][2]
    # max_delay_samples = 5: the 3-bit register saturates 6 and 7 to 5
    for d, t in ((5, 10), (6, 10), (7, 10), (4, 9)):
        assert live_times(tag(4, 2, [5], delay=d, max_delay=5), 4, 2) == [t]
    # the previous sample of sample 0 is the last sample of the previous delayed word:
    # a delay step from 0 to 2 replays the two samples "11" just seen, which gives no new
    # edge because the delayed stream was already high at the end of the previous clock
    r = tag(4, 1, "0011 1100 0000 0000", delay=[0, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    assert r["edges"][:4].tolist() == [1, 0, 0, 0]


def test_model_shape_at_a_million_clocks():
    rng = np.random.default_rng(5)
    n, S, P, C = 1_000_000, 8, 4, 4
    words = np.zeros((n, C), dtype=np.uint64)
    k = 10_000
    t, c, b = rng.integers(0, n, k), rng.integers(0, C, k), rng.integers(0, S, k)
    words[t, c] |= np.uint64(1) << b.astype(np.uint64)
    out = timetagger_model(S, P, words, [0, 3, 9, 31], 1, 2, 20)
    assert set(out) == set(OUTPUTS)
    assert all(v.shape == (n, C) for v in out.values())
    assert 0.98 * k < out["edges"].sum() <= k and out["live"].sum() > 0.98 * k
    assert out["live"].dtype == bool and out["edges"].dtype == np.int64


def test_model_argument_checks():
    w = np.zeros((10, 2), dtype=np.uint64)
    with pytest.raises(ValueError, match="does not divide"):
        timetagger_model(2, 4, w, [0, 0], 0, 1, 0)
    with pytest.raises(ValueError, match="4-bit words"):
        timetagger_model(4, 1, w + 16, [0, 0], 0, 1, 0)
    with pytest.raises(ValueError, match="delay must have shape"):
        timetagger_model(4, 1, w, [0, 0, 0], 0, 1, 0)
    with pytest.raises(ValueError, match="dead_samples must be non-negative"):
        timetagger_model(4, 1, w, [0, 0], 0, 1, -1)


def _rejects(match, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            TimeTagger(*args)
        gc.collect()


def test_component_parameters():
    _rejects("samples_per_clock", 3, 1, 1)
    _rejects("slots_per_clock", 8, 8, 1)
    _rejects("does not divide", 2, 4, 1)
    _rejects("channels", 4, 2, 0)
    _rejects("max_delay_samples", 4, 2, 1, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)     # built, never elaborated
        dut = TimeTagger(8, 4, 4)
        assert 1 <= TimeTagger.LATENCY == dut.LATENCY <= 3
        assert dut.max_delay == 31 and len(dut.delay[0]) == 5
        assert [len(getattr(dut, k)[0]) for k in OUTPUTS] == [1, 1, 2, 3, 4, 4, 1]
        dut = TimeTagger(2, 1, 1, max_delay_samples=5)
        assert len(dut.delay[0]) == 3 and len(dut.lane[0]) == 1 and len(dut.edges[0]) == 2
        del dut
        gc.collect()
