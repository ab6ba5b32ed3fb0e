"""SP 800-90B continuous health tests: cutoffs, vectorised model, gateware."""
import math

import numpy as np
import pytest
from amaranth.sim import Simulator
from scipy.stats import binom

from qkdlink.gateware.regmap import ALICE_REGISTERS
from qkdlink.hdl.health import (
    APT_WINDOW, HealthTests, apt_cutoff, false_alarm_rate, health_model, rct_cutoff,
)


def loop_model(samples, valid, rct_c, apt_c, restart=None):
    """The tests exactly as worded in docs/transmitter.md, one sample at a time (one lane)."""
    n = len(samples)
    restart = np.zeros(n, dtype=bool) if restart is None else restart
    rct = np.zeros(n, dtype=bool)
    apt = np.zeros(n, dtype=bool)
    last, run = None, 0
    a, count, in_window = None, 0, 0
    for t in range(n):
        if restart[t]:
            last, run, in_window = None, 0, 0
        if not valid[t]:
            continue
        x = int(samples[t])
        run = run + 1 if x == last else 1
        last = x
        rct[t] = run == rct_c
        if in_window == 0:
            a, count = x, 1
            apt[t] = count == apt_c
        elif x == a:
            count += 1
            apt[t] = count == apt_c
        in_window = (in_window + 1) % APT_WINDOW
    return rct, apt


def mixed_samples(rng, n):
    """Random bytes with stuck runs, biased stretches and alternating patterns."""
    s = rng.integers(0, 256, size=n)
    t = 0
    while t < n:
        length = int(rng.integers(5, 120))
        kind = rng.integers(0, 4)
        if kind == 1:
            s[t:t + length] = rng.integers(0, 256)
        elif kind == 2:
            bits = rng.random((min(length, n - t), 8)) < 0.9
            s[t:t + length] = bits @ (1 << np.arange(8))
        elif kind == 3:
            s[t:t + length] = rng.integers(0, 4, size=min(length, n - t))
        t += length + int(rng.integers(0, 200))
    return s.astype(np.uint8)


# ---------------------------------------------------------------------------- cutoffs

def test_default_cutoffs_match_register_resets():
    assert rct_cutoff(6) == rct_cutoff(6, -40) == 8
    assert apt_cutoff(6) == 36
    assert ALICE_REGISTERS["HEALTH_RCT_CUTOFF"].reset == rct_cutoff(6)
    assert ALICE_REGISTERS["HEALTH_APT_CUTOFF"].reset == apt_cutoff(6)


def test_rct_cutoff_90b_example():
    # SP 800-90B 4.4.1: alpha = 2^-20, H = 2 gives C = 1 + ceil(20 / 2) = 11
    assert rct_cutoff(2, -20) == 11
    assert rct_cutoff(8, -40) == 6
    assert rct_cutoff(40 / 7, -40) == 8          # exact quotient 7, no float rounding up


@pytest.mark.parametrize("h,table2", [(0.5, 410), (1, 311), (2, 177), (4, 62), (8, 13)])
def test_apt_cutoff_vs_90b_table2(h, table2):
    # 90B Table 2 (W = 512, alpha = 2^-20) uses Binom(W, p); ours counts A plus Binom(W-1, p)
    # and is the same or one higher.
    c = apt_cutoff(h, -20)
    assert c - table2 in (0, 1)


@pytest.mark.parametrize("h", [0.3, 1, 2.5, 6, 8])
@pytest.mark.parametrize("alpha_log2", [-20, -40, -64])
def test_apt_cutoff_definition(h, alpha_log2):
    c = apt_cutoff(h, alpha_log2)
    p, alpha = 2.0 ** -h, 2.0 ** alpha_log2
    assert binom.sf(c - 2, APT_WINDOW - 1, p) <= alpha           # P[X >= c-1] <= alpha
    assert c == 1 or binom.sf(c - 3, APT_WINDOW - 1, p) > alpha  # and c is the smallest
    assert 1 <= c <= APT_WINDOW + 1


@pytest.mark.parametrize("func", [rct_cutoff, apt_cutoff])
@pytest.mark.parametrize("h,alpha_log2,name", [
    (0, -40, "h_bits"), (-1, -40, "h_bits"), (8.5, -40, "h_bits"), (math.nan, -40, "h_bits"),
    ("6", -40, "h_bits"), (6, -10, "alpha_log2"), (6, -65, "alpha_log2"),
    (6, None, "alpha_log2"),
])
def test_cutoff_validation(func, h, alpha_log2, name):
    with pytest.raises(ValueError, match=name) as e:
        func(h, alpha_log2)
    assert "]" in str(e.value)                   # the message states the allowed range


def test_rct_cutoff_register_overflow():
    with pytest.raises(ValueError, match="h_bits"):
        rct_cutoff(1e-4, -40)


def test_false_alarm_rate():
    r = false_alarm_rate(6, 8, 36, sample_rate_hz=1e9)
    assert r["rct_per_sample"] == 2.0 ** -42
    assert r["apt_per_window"] <= 2.0 ** -40
    assert r["per_second"] == pytest.approx(1e9 * (2.0 ** -42 + r["apt_per_window"] / 512))
    assert 3600 < r["mean_seconds_between"] < 5400
    good = false_alarm_rate(8, 8, 36)
    assert good["rct_per_sample"] == 2.0 ** -56 and good["apt_per_window"] < 1e-30
    assert false_alarm_rate(6, 0, 0)["per_sample"] == 0
    with pytest.raises(ValueError, match="rct_cutoff"):
        false_alarm_rate(6, -1, 36)


# ---------------------------------------------------------------------------- model

@pytest.mark.parametrize("rct_c,apt_c", [(8, 36), (3, 12), (2, 3), (1, 1), (0, 0),
                                         (5, 512), (4, 513)])
def test_model_equals_loop(rct_c, apt_c):
    rng = np.random.default_rng(rct_c * 1000 + apt_c)
    n, lanes = 4000, 3
    s = np.stack([mixed_samples(rng, n) for _ in range(lanes)], axis=1)
    s[1000:1600, 2] = 7                           # a stuck stretch over a window boundary
    valid = rng.random(n) < 0.8
    restart = rng.random(n) < 0.003
    rct, apt = health_model(s, valid, rct_c, apt_c, restart=restart)
    for p in range(lanes):
        want_rct, want_apt = loop_model(s[:, p], valid, rct_c, apt_c, restart)
        np.testing.assert_array_equal(rct[:, p], want_rct)
        np.testing.assert_array_equal(apt[:, p], want_apt)
    # 1-D input is one lane
    rct1, apt1 = health_model(s[:, 0], valid, rct_c, apt_c, restart=restart)
    np.testing.assert_array_equal(rct1, rct[:, 0])
    np.testing.assert_array_equal(apt1, apt[:, 0])


def test_stuck_at():
    n = 3 * APT_WINDOW + 100
    s = np.full((n, 1), 0x42, dtype=np.uint8)
    rct, apt = health_model(s, np.ones(n, dtype=bool), 8, 36)
    # RCT: after exactly cutoff samples, once for the whole run
    assert np.flatnonzero(rct[:, 0]).tolist() == [7]
    # APT: on the cutoff-th sample of every window
    assert np.flatnonzero(apt[:, 0]).tolist() == [35, 512 + 35, 1024 + 35, 1536 + 35]
    # invalid clocks do not count; a restart starts over
    valid = np.ones(n, dtype=bool)
    valid[3] = False
    restart = np.zeros(n, dtype=bool)
    restart[100] = True
    rct, apt = health_model(s, valid, 8, 36, restart=restart)
    assert np.flatnonzero(rct[:, 0]).tolist() == [8, 107]
    assert np.flatnonzero(apt[:, 0]).tolist() == [36, 135, 612 + 35, 1124 + 35]


def test_biased_source_fires_quickly():
    """Each bit 1 with p = 0.9: the sample 0xFF has p = 0.43 (H = 1.2 bits, far below the
    assessed 6). With the default cutoffs the first fire (RCT or APT) comes after a median
    of ~180 samples (90 % within ~1100; from 2000 simulated lanes): an APT window whose
    first sample is 0xFF fires after ~85 samples, the RCT needs a run of eight 0xFF."""
    rng = np.random.default_rng(2024)
    n, lanes = 4096, 8
    bits = rng.random((n, lanes, 8)) < 0.9
    s = (bits @ (1 << np.arange(8))).astype(np.uint8)
    rct, apt = health_model(s, np.ones(n, dtype=bool), rct_cutoff(6), apt_cutoff(6))
    fired = rct | apt
    assert fired.any(axis=0).all()
    first = fired.argmax(axis=0)
    assert np.median(first) < 400
    assert rct.any()
    for p in np.flatnonzero(s[0] == 0xFF):       # first window's A is the likely value
        assert apt[:, p].argmax() < 150, p
    assert (s[0] == 0xFF).sum() >= 2


def test_no_false_alarm_on_good_random():
    """10^7 uniform 8-bit samples (8 lanes x 1.25e6 clocks), default cutoffs: no fire.

    Expected number of false alarms (``false_alarm_rate(8, 8, 36)``): RCT 2^-56 per sample,
    APT 1.5e-31 per window, i.e. 1.4e-10 fires in 10^7 samples. Even at the assessed H = 6
    it would be 2.3e-6 (10^7 * 2.3e-13).
    """
    rng = np.random.default_rng(12345)
    n, lanes = 1_250_000, 8
    s = rng.integers(0, 256, size=(n, lanes), dtype=np.uint8)
    expected = s.size * false_alarm_rate(8, 8, 36)["per_sample"]
    assert expected < 1e-9
    rct, apt = health_model(s, np.ones(n, dtype=bool), rct_cutoff(6), apt_cutoff(6))
    assert not rct.any() and not apt.any()
    # sanity of the vectorised model on the same data: the longest run and the largest
    # window count are what random data gives (small cutoffs do fire): P[run reaches 3] =
    # 2^-16 per sample, P[Binom(511, 1/256) >= 7] = 4.4e-3 per window
    rct3, apt8 = health_model(s, np.ones(n, dtype=bool), 3, 8)
    assert rct3.sum() == pytest.approx(s.size * 2.0 ** -16, rel=0.3)
    windows = s.size // APT_WINDOW
    assert apt8.sum() == pytest.approx(windows * binom.sf(6, APT_WINDOW - 1, 1 / 256), rel=0.3)


def test_model_validation():
    s = np.zeros((4, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="rct_cutoff"):
        health_model(s, np.ones(4, bool), 70000, 36)
    with pytest.raises(ValueError, match="apt_cutoff"):
        health_model(s, np.ones(4, bool), 8, -1)
    with pytest.raises(ValueError, match="8-bit"):
        health_model(np.full((4, 1), 300), np.ones(4, bool), 8, 36)


# ---------------------------------------------------------------------------- gateware

def simulate(samples, valid, restart, cutoffs):
    """Run HealthTests; ``cutoffs`` is a per-clock list of (rct, apt) register values."""
    dut = HealthTests()
    rct, apt = [], []

    async def tb(ctx):
        for t in range(len(samples)):
            ctx.set(dut.sample, int(samples[t]))
            ctx.set(dut.valid, int(valid[t]))
            ctx.set(dut.restart, int(restart[t]))
            ctx.set(dut.rct_cutoff, cutoffs[t][0])
            ctx.set(dut.apt_cutoff, cutoffs[t][1])
            rct.append(ctx.get(dut.rct_fire))
            apt.append(ctx.get(dut.apt_fire))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return np.array(rct, dtype=bool), np.array(apt, dtype=bool)


@pytest.mark.parametrize("rct_c,apt_c", [(8, 36), (3, 10), (1, 1), (2, 512)])
def test_gateware_equals_model(rct_c, apt_c):
    rng = np.random.default_rng(77 + rct_c)
    n = 2500
    s = mixed_samples(rng, n)
    s[950:1800] = 0x3C                        # stuck, restarted at 1000: a full APT window
    valid = rng.random(n) < 0.85
    restart = np.zeros(n, dtype=bool)
    restart[[400, 401, 1000, 2000]] = True
    valid[[1000, 2000]] = True                # restart and sample in the same clock
    rct, apt = simulate(s, valid, restart, [(rct_c, apt_c)] * n)
    want_rct, want_apt = health_model(s, valid, rct_c, apt_c, restart=restart)
    np.testing.assert_array_equal(rct, want_rct)
    np.testing.assert_array_equal(apt, want_apt)
    assert want_rct.any() and want_apt.any()


def test_gateware_disabled_and_stuck_once():
    """Cutoff 0 never fires; a stuck source fires the RCT once per run, the APT once per
    window; cutoffs are live registers."""
    n = 1200
    s = np.full(n, 0x99, dtype=np.uint8)
    valid = np.ones(n, dtype=bool)
    restart = np.zeros(n, dtype=bool)
    cut = [(0, 0)] * 600 + [(5, 20)] * 600
    rct, apt = simulate(s, valid, restart, cut)
    assert not rct[:600].any() and not apt[:600].any()
    # run length 601.. at clock 600: never equals 5 again; the window restarting at 1024 does
    assert not rct.any()
    assert np.flatnonzero(apt).tolist() == [1024 + 19]
