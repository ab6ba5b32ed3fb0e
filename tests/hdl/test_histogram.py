"""FineTimeBins counted by a CounterRam (as in Bob) vs histogram_model: clears, snapshots."""
import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.sim import Simulator

from qkdlink.hdl.counter_ram import CounterRam
from qkdlink.hdl.histogram import FineTimeBins, histogram_model

CHANNELS = 4


def run(bins, live, fine, clear, snaps):
    """FineTimeBins -> CounterRam over the given clocks; after each snapshot clock in ``snaps``
    (none during a sweep) wait for the sweep and read every bin. Returns
    {snapshot clock: (channels, bins) counts}."""
    n = live.shape[0]
    hist = FineTimeBins(CHANNELS, bins)
    cram = CounterRam(CHANNELS * bins, 32, 1)
    m = Module()
    m.submodules += [hist, cram]
    m.d.comb += [cram.inc[c * bins + b].eq(hist.hits[c][b]) for c in range(CHANNELS) for b in range(bins)]
    words = CHANNELS * bins
    reads = {}
    for s in snaps:
        for a in range(words):
            reads[s + cram.sweep_clocks + 1 + a] = (s, a)
    got = {s: np.zeros((CHANNELS, bins), np.int64) for s in snaps}

    async def tb(ctx):
        sweep_end = cram.sweep_clocks              # the reset sweep
        for t in range(max(max(reads) + 2, n)):
            on = t < n
            ctx.set(hist.live, int(live[t] @ (1 << np.arange(CHANNELS))) if on else 0)
            ctx.set(hist.fine.as_value(), int(fine[t] @ (1 << 3 * np.arange(CHANNELS))) if on else 0)
            req = (on and bool(clear[t])) or t in snaps
            ctx.set(cram.clear, int(on and clear[t]))
            ctx.set(cram.snapshot, int(t in snaps))
            if req:
                assert t > sweep_end, f"test schedule: request during a sweep at clock {t}"
                sweep_end = t + cram.sweep_clocks
            ctx.set(cram.r_en, int(t in reads))
            ctx.set(cram.r_addr, reads[t][1] if t in reads else 0)
            await ctx.tick()
            if t in reads:
                s, a = reads[t]
                got[s][a // bins, a % bins] = ctx.get(cram.r_data)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return got


@pytest.mark.parametrize("bins", [1, 2, 4, 8])
def test_histogram_matches_model(bins):
    rng = np.random.default_rng(40 + bins)
    n = 1500
    live = rng.random((n, CHANNELS)) < np.array([0.9, 0.5, 0.1, 0.0])
    live[n // 2:n // 2 + 100] = True                         # all channels at once
    fine = rng.integers(0, 8, size=(n, CHANNELS))             # >= bins: not counted
    fine[rng.random(n) < 0.5] %= bins
    clear = np.zeros(n, dtype=bool)
    clear[[300, 777, 1200]] = True
    clear[900] = live[900].any()                             # a clear with live edges
    snaps = [100, 340, 700, 1100, n]                          # no request during a sweep
    got = run(bins, live, fine, clear, snaps)
    for s in snaps:
        want = histogram_model(live[:s], fine[:s], bins, clear[:s])
        assert (got[s] == want).all(), (s, got[s], want)
    assert got[n][0].sum() > 100 and got[n][3].sum() == 0


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


def test_parameters():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for args in ((0, 4), (4, 0), (4, 9)):
            with pytest.raises(ValueError):
                FineTimeBins(*args)
        dut = FineTimeBins(4, 8)
        assert len(dut.hits.as_value()) == 4 * 8
        del dut
        gc.collect()
