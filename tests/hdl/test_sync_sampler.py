"""SyncSampler gateware vs sync_sampler_model; end to end with Alice's sync bits through the
pulse shaper: which sampler delays recover the bits exactly."""
import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.sim import Simulator
from amaranth.utils import bits_for

from qkdlink.hdl.pulses import PulseShaper, pulse_shaper_model
from qkdlink.hdl.sync import sync_bits_model
from qkdlink.hdl.sync_sampler import SyncSampler, sync_sampler_model
from qkdlink.hdl.timetagger import TimeTagger

GEOMETRIES = [(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4), (8, 2), (8, 4)]
FRAME_LOG2 = 7                          # a marker every 128 slots: many in a short run


def simulate(dut, words, delay):
    """Run ``dut`` on (n,) ``words`` with per-clock ``delay``; (n, P) bits by input clock."""
    n, L, P = len(words), dut.LATENCY, dut.P
    out = np.zeros((n + L, P), dtype=bool)

    async def tb(ctx):
        for t in range(n + L):
            if t < n:
                ctx.set(dut.samples, int(words[t]))
                ctx.set(dut.delay, int(delay[t]))
            await ctx.tick()
            v = ctx.get(dut.bits)
            out[t] = [(v >> p) & 1 for p in range(P)]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return out[L - 1:L - 1 + n]


def spec_model(S, P, words, delay, max_delay):
    """The contract as worded, one sample at a time."""
    K = S // P
    x = [int(words[T // S]) >> (T % S) & 1 for T in range(len(words) * S)]
    out = np.zeros((len(words), P), dtype=bool)
    for T in range(len(x)):
        t, i = divmod(T, S)
        src = T - min(int(delay[t]), max_delay)
        out[t, i // K] |= bool(x[src]) if src >= 0 else False
    return out


@pytest.mark.parametrize("S,P", GEOMETRIES)
@pytest.mark.parametrize("max_delay", [None, 5])
def test_sampler_matches_model(S, P, max_delay):
    rng = np.random.default_rng(10 * S + P + (max_delay or 0))
    dut = SyncSampler(S, P, max_delay)
    dmax = dut.max_delay
    dreg_max = (1 << bits_for(dmax)) - 1
    # every delay 0..register max (above dmax saturates), in segments of 24 clocks, words
    # alternating sparse, dense and long runs of ones
    delays = list(range(dreg_max + 1)) + list(rng.integers(0, dreg_max + 1, 6))
    seg = 24
    n = seg * len(delays)
    delay = np.repeat(delays, seg)
    density = np.repeat(rng.choice([0.05, 0.5, 0.95], size=n // 8 + 1), 8)[:n]
    bits = rng.random((n, S)) < density[:, None]
    words = (bits.astype(np.int64) << np.arange(S)).sum(axis=1)
    want = sync_sampler_model(S, P, words, delay, max_delay_samples=max_delay)
    assert (want == spec_model(S, P, words, delay, dmax)).all()
    got = simulate(dut, words, delay)
    bad = np.flatnonzero((got != want).any(axis=1))
    assert bad.size == 0, [(int(t), int(delay[t]), got[t].tolist(), want[t].tolist())
                           for t in bad[:5]]
    assert want.any() and not want.all()


def test_model_by_hand():
    # S = 4, P = 2: lanes are samples {0,1}, {2,3}
    w = np.array([0b0001, 0b1000, 0b0000, 0b0110])
    assert sync_sampler_model(4, 2, w, 0).astype(int).tolist() == [[1, 0], [0, 1], [0, 0], [1, 1]]
    # delay 1: sample 3 of clock 1 moves to sample 0 of clock 2
    assert sync_sampler_model(4, 2, w, 1).astype(int).tolist() == [[1, 0], [0, 0], [1, 0], [0, 1]]
    # delay 6 = one clock + 2 samples; nothing before reset
    assert sync_sampler_model(4, 2, w, 6).astype(int).tolist() == [[0, 0], [0, 1], [0, 0], [1, 0]]
    # saturation at max_delay_samples, per-clock delays
    assert (sync_sampler_model(4, 2, w, 99, max_delay_samples=6)
            == sync_sampler_model(4, 2, w, 6)).all()
    per = sync_sampler_model(4, 2, w, [0, 0, 1, 1])   # clock 2 sees sample 3 of clock 1
    assert per.astype(int).tolist() == [[1, 0], [0, 1], [1, 0], [0, 1]]
    # K = 1: a run of ones is one bit per sample
    assert sync_sampler_model(2, 2, np.array([0b10, 0b11, 0b01]), 0).astype(int).tolist() == \
        [[0, 1], [1, 1], [1, 0]]
    with pytest.raises(ValueError, match="4-bit"):
        sync_sampler_model(4, 2, [16], 0)
    with pytest.raises(ValueError, match="delay"):
        sync_sampler_model(4, 2, [1, 2], [0, 1, 2])


def _alice(S, P, n, seed):
    """Alice's sync bits (n, P) from a random frame-aligned slot, pulse-shaped words arrive
    one clock later (the shaper's register); returns (fire, words(d, w))."""
    rng = np.random.default_rng(seed)
    base = int(rng.integers(0, 1 << 40)) << FRAME_LOG2
    base -= int(rng.integers(0, 1 << FRAME_LOG2)) // P * P        # start inside a frame
    fire = sync_bits_model(base + np.arange(n * P, dtype=np.uint64), FRAME_LOG2).reshape(n, P)
    fire[-8:] = False                                             # room to flush the delays

    def words(d, w):
        out = pulse_shaper_model(S, P, fire[:, None, :], np.ones(n, bool), d, w)[:, 0]
        return np.concatenate([[0], out[:-1]]).astype(np.int64)   # wire word of cycle t
    return fire, words


def _recovers(S, P, d, w, D):
    """Documented condition: D + d = q*S + u with 0 <= u <= K - w; returns q or None."""
    q, u = divmod(D + d, S)
    return q if u <= S // P - w else None


@pytest.mark.parametrize("S,P", GEOMETRIES)
def test_end_to_end_recovery(S, P):
    """For every shaper delay d in [0, S], width w in [1, K] and sampler delay D in
    [0, max]: the sampled bits equal Alice's bits shifted by 1 + q clocks iff D + d = q*S + u
    with 0 <= u <= K - w (module docstring); otherwise no clock shift reproduces them."""
    K = S // P
    n = 600
    fire, words = _alice(S, P, n, seed=S * 10 + P)
    assert fire[:, :].any(axis=0).all() and (~fire[:-8]).any(axis=0).all()
    dmax = 4 * S - 1
    n_ok = 0
    for d in range(S + 1):
        for w in range(1, K + 1):
            x = words(d, w)
            for D in range(dmax + 1):
                got = sync_sampler_model(S, P, x, D)
                q = _recovers(S, P, d, w, D)
                if q is not None:
                    n_ok += 1
                    assert not got[:1 + q].any(), (d, w, D)
                    assert (got[1 + q:] == fire[:n - 1 - q]).all(), (d, w, D, q)
                else:
                    for s in range(6):
                        assert (got[s:] != fire[:n - s]).any(), (d, w, D, s)
            # the documented natural choice recovers
            assert _recovers(S, P, d, w, (S - d) % S + (K - w) // 2) is not None
    assert n_ok > 0


@pytest.mark.parametrize("S,P,d,w", [(1, 1, 1, 1), (4, 2, 3, 1), (8, 4, 5, 2), (4, 4, 0, 1)])
def test_end_to_end_gateware(S, P, d, w):
    """PulseShaper -> SyncSampler in one simulation, natural delay: Alice's fire bits of
    clock t appear on ``bits`` in cycle t + 1 + q + LATENCY (cycle of the last tick)."""
    K = S // P
    n = 400
    fire, _ = _alice(S, P, n, seed=7 + S + d)
    D = (S - d) % S + (K - w) // 2
    q = _recovers(S, P, d, w, D)
    assert q is not None
    m = Module()
    m.submodules.shaper = shaper = PulseShaper(S, P, 1)
    m.submodules.sampler = sampler = SyncSampler(S, P)
    m.d.comb += sampler.samples.eq(shaper.samples[0])
    fire_words = [int(sum(int(b) << p for p, b in enumerate(row))) for row in fire]
    out = np.zeros((n + 8, P), dtype=bool)

    async def tb(ctx):
        ctx.set(shaper.active, 1)
        ctx.set(shaper.delay, d)
        ctx.set(shaper.width, w)
        ctx.set(sampler.delay, D)
        for t in range(n + 8):
            ctx.set(shaper.fire.as_value(), fire_words[t] if t < n else 0)
            await ctx.tick()
            v = ctx.get(sampler.bits)
            out[t] = [(v >> p) & 1 for p in range(P)]

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    lag = 1 + q + SyncSampler.LATENCY          # out[t] is read after tick t (cycle t + 1)
    assert not out[:lag - 1].any()
    assert (out[lag - 1:lag - 1 + n] == fire).all()


def test_latency_matches_timetagger():
    assert SyncSampler.LATENCY == TimeTagger.LATENCY == 3


def test_parameter_checks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="slots_per_clock"):
            SyncSampler(4, 3)
        with pytest.raises(ValueError, match="max_delay_samples"):
            SyncSampler(4, 2, -1)
        s = SyncSampler(8, 2)
        assert (s.max_delay, len(s.delay), len(s.bits), len(s.samples)) == (31, 5, 2, 8)
        assert len(SyncSampler(1, 1, 0).delay) == 1
        del s
        gc.collect()
