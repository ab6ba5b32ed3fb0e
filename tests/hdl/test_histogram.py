"""FineTimeHistogram gateware vs histogram_model, clear, wrap-around."""
import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from qkdlink.hdl.histogram import FineTimeHistogram, histogram_model

CHANNELS = 4


def unpack(value, channels, bins):
    """Flat ``counts`` value -> (channels, bins) ints."""
    return np.array([[(value >> (32 * (c * bins + b))) & 0xFFFF_FFFF for b in range(bins)]
                     for c in range(channels)], dtype=np.int64)


@pytest.mark.parametrize("bins", [1, 2, 4, 8])
def test_histogram_matches_model(bins):
    rng = np.random.default_rng(40 + bins)
    n = 1500
    live = rng.random((n, CHANNELS)) < np.array([0.9, 0.5, 0.1, 0.0])
    live[n // 2:n // 2 + 100] = True                         # all channels at once
    fine = rng.integers(0, 8, size=(n, CHANNELS))             # >= bins: not counted
    fine[rng.random(n) < 0.5] %= bins
    clear = np.zeros(n, dtype=bool)
    clear[[300, 301, 777, 1200]] = True
    clear[900] = live[900].any()                             # a clear with live edges
    dut = FineTimeHistogram(CHANNELS, bins)
    got = []

    async def tb(ctx):
        for t in range(n):
            ctx.set(dut.live, int(live[t] @ (1 << np.arange(CHANNELS))))
            ctx.set(dut.fine.as_value(), int(fine[t] @ (1 << 3 * np.arange(CHANNELS))))
            ctx.set(dut.clear, int(clear[t]))
            await ctx.tick()
            got.append(ctx.get(dut.counts.as_value()))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    for t in list(range(0, n, 37)) + [299, 300, 301, 302, 899, 900, n - 1]:
        want = histogram_model(live[:t + 1], fine[:t + 1], bins, clear[:t + 1])
        assert (unpack(got[t], CHANNELS, bins) == want).all(), (t, want)
    final = histogram_model(live, fine, bins, clear)
    assert final[0].sum() > 100 and final[3].sum() == 0
    assert (unpack(got[300], CHANNELS, bins) == 0).all()


def test_model_by_hand():
    live = np.array([[1, 0], [1, 1], [0, 1], [1, 1]], dtype=bool)
    fine = np.array([[0, 3], [1, 3], [1, 1], [3, 5]])
    assert histogram_model(live, fine, 4).tolist() == [[1, 1, 0, 1], [0, 1, 0, 1]]
    clear = np.array([0, 1, 0, 0], dtype=bool)                 # the clear clock's edges: gone
    assert histogram_model(live, fine, 4, clear).tolist() == [[0, 0, 0, 1], [0, 1, 0, 0]]
    assert histogram_model(live, fine, 2).tolist() == [[1, 1], [0, 1]]
    assert histogram_model(live, fine, 4).dtype == np.uint32
    with pytest.raises(ValueError, match="bins"):
        histogram_model(live, fine, 9)
    with pytest.raises(ValueError, match="clear"):
        histogram_model(live, fine, 4, clear[:2])


def test_counters_wrap_at_32_bits():
    dut = FineTimeHistogram(2, 2)
    seen = []

    async def tb(ctx):
        ctx.set(dut.counts[1][1], 0xFFFF_FFFE)                 # preload one counter
        ctx.set(dut.live, 0b10)
        ctx.set(dut.fine[1], 1)
        for _ in range(3):
            await ctx.tick()
            seen.append(ctx.get(dut.counts[1][1]))
        ctx.set(dut.clear, 1)
        await ctx.tick()
        seen.append(ctx.get(dut.counts[1][1]))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen == [0xFFFF_FFFF, 0, 1, 0]


def test_parameters():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for args in ((0, 4), (4, 0), (4, 9)):
            with pytest.raises(ValueError):
                FineTimeHistogram(*args)
        dut = FineTimeHistogram(4, 8)
        assert len(dut.counts.as_value()) == 4 * 8 * 32 and dut.LATENCY == 1
        del dut
        gc.collect()
