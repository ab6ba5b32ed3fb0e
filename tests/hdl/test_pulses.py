"""PulseShaper gateware vs pulse_shaper_model for every (S, P), all delays and widths."""
import gc
import itertools
import time
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from qkdlink.hdl.pulses import PulseShaper, check_geometry, pulse_shaper_model

GEOMETRIES = [(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4), (8, 2), (8, 4)]
CHANNELS = 3
MAX_CYCLES = 2000


def _schedule(rng, S, K):
    """Per-clock (delay, width): every delay 0..S and 15, every width 0..K+1 and 15."""
    combos = list(itertools.product(list(range(S + 1)) + [15], list(range(K + 2)) + [15]))
    rng.shuffle(combos)
    seg = max(4, min(16, (MAX_CYCLES - 50) // len(combos)))
    delay = np.repeat([c[0] for c in combos], seg)
    width = np.repeat([c[1] for c in combos], seg)
    return delay, width


@pytest.mark.parametrize("S,P", GEOMETRIES)
def test_shaper_matches_model(S, P):
    K = check_geometry(S, P)
    rng = np.random.default_rng(10 * S + P)
    delay, width = _schedule(rng, S, K)
    n = len(delay) + 4
    assert n <= MAX_CYCLES
    delay = np.append(delay, [S] * 4)
    width = np.append(width, [K] * 4)
    fire = rng.random((n, CHANNELS, P)) < 0.5
    fire[-4:] = True
    # active gaps: single clocks and runs of idle clocks, and a stop right after a late pulse
    active = rng.random(n) < 0.85
    for start in rng.integers(0, n - 10, size=n // 200):
        active[start:start + rng.integers(2, 8)] = False
    active[-3:] = False
    want = pulse_shaper_model(S, P, fire, active, delay, width)

    fire_words = [sum(int(fire[t, c, p]) << (c * P + p) for c in range(CHANNELS) for p in range(P))
                  for t in range(n)]
    dut = PulseShaper(S, P, CHANNELS)
    got = np.zeros((n, CHANNELS), dtype=np.uint64)

    async def tb(ctx):
        for t in range(n):
            ctx.set(dut.active, int(active[t]))
            ctx.set(dut.fire.as_value(), fire_words[t])
            ctx.set(dut.delay, int(delay[t]))
            ctx.set(dut.width, int(width[t]))
            await ctx.tick()
            v = ctx.get(dut.samples.as_value())
            for c in range(CHANNELS):
                got[t, c] = (v >> (c * S)) & ((1 << S) - 1)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    bad = np.flatnonzero((got != want).any(axis=1))
    assert bad.size == 0, [(int(t), int(delay[t]), int(width[t]), got[t].tolist(), want[t].tolist())
                           for t in bad[:5]]
    assert want[:, :].any() and (want == 0).any()       # the run exercised pulses and gaps


def test_model_by_hand():
    S, P = 4, 2                                  # K = 2
    fire = np.zeros((4, 1, 2), bool)
    fire[0, 0, 1] = True                         # lane 1 at clock 0
    fire[2, 0, 0] = True                         # lane 0 at clock 2
    active = np.array([True, True, True, False])
    out = pulse_shaper_model(S, P, fire, active, delay=3, width=2)[:, 0]
    # clock 0: E = 0b11 << (2 + 3) = bits 5, 6 -> spill bits 1, 2 into clock 1
    # clock 2: E = 0b11 << 3 = bits 3, 4 -> bit 3 now, bit 0 spills into clock 3 (not running)
    assert out.tolist() == [0b0000, 0b0110, 0b1000, 0b0001]
    # saturation: delay 15 -> S, width 15 -> K; width 0 -> nothing
    assert pulse_shaper_model(S, P, fire, active, 15, 15)[:, 0].tolist() == [0, 0b1100, 0, 0b0011]
    assert not pulse_shaper_model(S, P, fire, active, 0, 0).any()
    with pytest.raises(ValueError, match="does not divide"):
        pulse_shaper_model(2, 4, fire, active, 0, 1)
    with pytest.raises(ValueError, match="fire must be"):
        pulse_shaper_model(4, 4, fire, active, 0, 1)


def _rejects(match, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)     # the half-built component
        with pytest.raises(ValueError, match=match):
            PulseShaper(*args)
        gc.collect()


def test_geometry_checks():
    _rejects("samples_per_clock", 3, 1, 1)
    _rejects("samples_per_clock", 16, 2, 1)
    _rejects("slots_per_clock", 8, 8, 1)
    _rejects("does not divide", 2, 4, 1)
    _rejects("channels", 4, 2, 0)


def test_model_speed():
    rng = np.random.default_rng(3)
    n = 1_000_000
    fire = rng.random((n, 5, 4)) < 0.3
    active = rng.random(n) < 0.99
    t0 = time.perf_counter()
    out = pulse_shaper_model(8, 4, fire, active, 5, 2)
    assert time.perf_counter() - t0 < 1.0
    assert out.shape == (n, 5) and out.dtype == np.uint64
