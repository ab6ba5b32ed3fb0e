"""SymbolSelector / LaserDriver gateware vs models, symbol statistics, host quantisation."""
import time

import numpy as np
import pytest
from amaranth.sim import Simulator
from scipy import stats

from qkdlink.hdl.symbols import (
    INTENSITY_BLANK, INTENSITY_DECOY, INTENSITY_SIGNAL, INTENSITY_VACUUM, PROB_ONE,
    LaserDriver, SymbolSelector, im_code_model, intensity_thresholds, laser_fire_model,
    quantise_probability, select_symbols_model,
)

LANES = (1, 2, 4)

# (pz_q15, t_signal_q15, t_decoy_q15): boundaries, full/empty probabilities, 16-bit extremes.
SETTINGS = [
    (0, 0, 0),
    (PROB_ONE, PROB_ONE, 0),
    (16384, 20000, 12768),          # thresholds sum to exactly 32768: no vacuum
    (29491, 22938, 0),              # t_decoy = 0: no decoy
    (1, 1, 1),
    (PROB_ONE - 1, 16384, 8192),
    (65535, 65535, 65535),          # register maxima
    (1000, 100, 65500),             # a 16-bit threshold sum would wrap to 64: decoy, not vacuum
    (12345, 30000, 2767),
]


def _words_for(rng, n, lanes, pz, ts, td):
    """Random words with u_basis / u_int pushed onto the decision edges half of the time."""
    w = rng.integers(0, 1 << 32, size=(n, lanes), dtype=np.uint64)
    edges_b = np.clip(np.array([pz - 1, pz, pz + 1, 0, PROB_ONE - 1]), 0, PROB_ONE - 1)
    edges_i = np.clip(np.array([ts - 1, ts, ts + 1, ts + td - 1, ts + td, ts + td + 1,
                                0, PROB_ONE - 1]), 0, PROB_ONE - 1)
    ub = np.where(rng.random((n, lanes)) < 0.5, rng.choice(edges_b, (n, lanes)), w & 0x7FFF)
    ui = np.where(rng.random((n, lanes)) < 0.5, rng.choice(edges_i, (n, lanes)), (w >> 15) & 0x7FFF)
    w = (w & ~np.uint64(0x3FFFFFFF)) | ub.astype(np.uint64) | (ui.astype(np.uint64) << np.uint64(15))
    return w.astype(np.uint32)


def _pack(row, bits):
    v = 0
    for i, x in enumerate(row):
        v |= int(x) << (bits * i)
    return v


def _unpack(v, bits, count):
    return [(v >> (bits * i)) & ((1 << bits) - 1) for i in range(count)]


@pytest.mark.parametrize("lanes", LANES)
def test_selector_matches_model(lanes):
    rng = np.random.default_rng(100 + lanes)
    dut = SymbolSelector(lanes)
    n = 150
    cases = []
    for pz, ts, td in SETTINGS:
        words = _words_for(rng, n, lanes, pz, ts, td)
        ok = rng.random(n) < 0.85
        cases.append((pz, ts, td, words, ok, select_symbols_model(words, ok, pz, ts, td)))
    mismatches = []

    async def tb(ctx):
        for pz, ts, td, words, ok, want in cases:
            ctx.set(dut.pz_q15, pz)
            ctx.set(dut.t_signal_q15, ts)
            ctx.set(dut.t_decoy_q15, td)
            for t in range(n):
                ctx.set(dut.words, _pack(words[t], 32))
                ctx.set(dut.ok, int(ok[t]))
                got = _unpack(ctx.get(dut.symbols.as_value()), 4, lanes)
                if got != list(want[t]):
                    mismatches.append((pz, ts, td, t, got, list(want[t])))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    assert not mismatches, mismatches[:5]


def test_model_decisions_by_hand():
    # u_basis = 100, u_int = 200, bit = 1
    w = np.array([[100 | (200 << 15) | (1 << 30) | (1 << 31)]], dtype=np.uint32)
    ok = np.array([True])

    def sym(pz, ts, td):
        return int(select_symbols_model(w, ok, pz, ts, td)[0, 0])

    assert sym(101, 201, 0) == 1 | (0 << 1) | (INTENSITY_SIGNAL << 2)
    assert sym(100, 200, 1) == 1 | (1 << 1) | (INTENSITY_DECOY << 2)      # u == threshold -> next
    assert sym(100, 100, 100) == 1 | (1 << 1) | (INTENSITY_VACUUM << 2)
    assert sym(0, 0, 0) == 1 | (1 << 1) | (INTENSITY_VACUUM << 2)
    assert sym(65535, 65535, 65535) == 1 | (INTENSITY_SIGNAL << 2)
    blank = select_symbols_model(np.repeat(w, 3, axis=0).reshape(3, 1), np.zeros(3, bool), 100, 200, 1)
    assert (blank == INTENSITY_BLANK << 2).all()
    with pytest.raises(ValueError, match="pz_q15"):
        select_symbols_model(w, ok, 65536, 0, 0)
    with pytest.raises(ValueError, match="ok must have shape"):
        select_symbols_model(w, np.ones(2, bool), 0, 0, 0)


@pytest.mark.parametrize("lanes", LANES)
def test_laser_driver_matches_model(lanes):
    rng = np.random.default_rng(7 + lanes)
    n = 300
    codes = rng.integers(0, 16, size=(n, lanes), dtype=np.uint8)
    codes[:16, 0] = np.arange(16)                      # every code on lane 0
    fire_want = laser_fire_model(codes)                # (n, 4, lanes)
    im_want = im_code_model(codes)
    dut = LaserDriver(lanes)
    mismatches = []

    async def tb(ctx):
        for t in range(n):
            ctx.set(dut.symbols.as_value(), _pack(codes[t], 4))
            fire = _unpack(ctx.get(dut.fire.as_value()), lanes, 4)
            want = [_pack(fire_want[t, s], 1) for s in range(4)]
            im = _unpack(ctx.get(dut.im_code.as_value()), 2, lanes)
            if fire != want or im != list(im_want[t]):
                mismatches.append((t, list(codes[t]), fire, want, im, list(im_want[t])))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    assert not mismatches, mismatches[:5]


def test_laser_model_states():
    codes = np.arange(16, dtype=np.uint8).reshape(16, 1)
    fire = laser_fire_model(codes)[:, :, 0]
    for c in range(16):
        lit = (c >> 2) != INTENSITY_BLANK
        assert fire[c].tolist() == [lit and (c & 3) == s for s in range(4)]
    assert im_code_model(codes)[:, 0].tolist() == [i if i != 3 else 2 for i in np.arange(16) >> 2]


def test_chi_square_symbol_distribution():
    """10^6 model symbols from uniform words follow the programmed (quantised) probabilities."""
    rng = np.random.default_rng(2024)
    n = 1_000_000
    pz = quantise_probability(0.9)
    ts, td = intensity_thresholds(0.7, 0.2, 0.1)
    words = rng.integers(0, 1 << 32, size=(n, 1), dtype=np.uint64).astype(np.uint32)
    codes = select_symbols_model(words, np.ones(n, bool), pz, ts, td)[:, 0]
    observed = np.bincount(codes, minlength=16)[:12]
    p_basis = np.array([pz, PROB_ONE - pz]) / PROB_ONE
    p_int = np.array([ts, td, PROB_ONE - ts - td]) / PROB_ONE
    code = np.arange(12)
    expected = n * 0.5 * p_basis[(code >> 1) & 1] * p_int[code >> 2]
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # the test has power: a 1 % error in P(signal) is rejected
    p_bad = np.array([ts / PROB_ONE - 0.01, td / PROB_ONE + 0.01, p_int[2]])
    bad = n * 0.5 * p_basis[(code >> 1) & 1] * p_bad[code >> 2]
    assert stats.chisquare(observed, bad).pvalue < 1e-6


def test_quantisation():
    assert quantise_probability(0) == 0
    assert quantise_probability(1) == PROB_ONE
    assert quantise_probability(0.5) == 16384
    assert quantise_probability(1.4 / PROB_ONE) == 1
    assert quantise_probability(1.5 / PROB_ONE) == 2                   # ties round up
    for p in np.random.default_rng(1).random(1000):
        assert abs(quantise_probability(p) / PROB_ONE - p) <= 2.0 ** -16
    for bad in (-1e-12, 1.0000001, float("nan"), "x"):
        with pytest.raises(ValueError, match="probability"):
            quantise_probability(bad)
    assert intensity_thresholds(0.5, 0.25, 0.25) == (16384, 8192)
    assert intensity_thresholds(1, 0, 0) == (PROB_ONE, 0)
    assert intensity_thresholds(0, 0, 1) == (0, 0)
    # both on a rounding tie: the sum must still fit in 1
    ts, td = intensity_thresholds(16383.5 / PROB_ONE, 16384.5 / PROB_ONE, 0)
    assert ts + td == PROB_ONE
    with pytest.raises(ValueError, match=r"signal=0\.5.*decoy=0\.3.*vacuum=0\.3"):
        intensity_thresholds(0.5, 0.3, 0.3)
    with pytest.raises(ValueError, match="outside"):
        intensity_thresholds(1.2, -0.2, 0.0)


def test_model_speed():
    rng = np.random.default_rng(5)
    n = 1_000_000
    words = rng.integers(0, 1 << 32, size=(n, 4), dtype=np.uint64).astype(np.uint32)
    ok = rng.random(n) < 0.99
    t0 = time.perf_counter()
    codes = select_symbols_model(words, ok, 29491, 22938, 6554)
    laser_fire_model(codes)
    im_code_model(codes)
    assert time.perf_counter() - t0 < 1.0
