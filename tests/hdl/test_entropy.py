"""Entropy stage: xoroshiro128++ model and gateware, EntropySource against entropy_model."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from scipy import stats

from qkdlink.hdl import entropy as E
from qkdlink.hdl.entropy import (
    ENTROPY_BITS_PER_SLOT, LANE_K0, LANE_K1, EntropySource, Xoroshiro128ppLanes,
    entropy_model, splitmix64, xoroshiro128pp_next, xoroshiro_lane_words,
)

M32 = 0xFFFF_FFFF


def scalar_words(seed, lane, n):
    s0, s1 = seed ^ LANE_K0[lane], seed ^ LANE_K1[lane]
    out = []
    for _ in range(n):
        r, s0, s1 = xoroshiro128pp_next(s0, s1)
        out.append(r >> 32)
    return np.array(out, dtype=np.uint32)


def split_lanes(value, lanes):
    return [(value >> (32 * p)) & M32 for p in range(lanes)]


def join_lanes(words):
    return sum(int(w) << (32 * p) for p, w in enumerate(words))


# ---------------------------------------------------------------------------- constants

def test_lane_constants():
    # Independent values: Vigna's splitmix64.c, seeded with 0, gives these first outputs.
    assert splitmix64(0)[0] == 0xE220A8397B1DCDAF
    assert (LANE_K0[0], LANE_K1[0]) == (0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4)
    assert (LANE_K0[7], LANE_K1[7]) == (0x63CBE1E459320DD7, 0x044C3CD7F43C661C)
    assert len(LANE_K0) == len(LANE_K1) == 8
    assert all(a != b for a, b in zip(LANE_K0, LANE_K1))
    assert ENTROPY_BITS_PER_SLOT == 32


# ---------------------------------------------------------------------------- model

# Computed with the reference C code (xoroshiro128plusplus.c and splitmix64.c by Blackman &
# Vigna, compiled with gcc), upper 32 bits of the first outputs.
PINNED = {
    (0, 0): [0x6F68E1E7, 0xBF971B7F, 0x48F2DE55, 0x6EA7C59F, 0x765437C0, 0x54E0C2B4],
    (0, 2): [0x8F348705, 0xC6100FD8, 0x497902E6, 0x709FB87F, 0x450FAEFB, 0xAF414054],
    (0x0123456789ABCDEF, 1): [0xF2CD4228, 0xBD282A3A, 0xCAF10E9B, 0xB99BAA55, 0xECD44D8B,
                              0x5A6D751A],
}


@pytest.mark.parametrize("seed,lane", list(PINNED))
def test_pinned_words(seed, lane):
    assert xoroshiro_lane_words(seed, lane, 6).tolist() == PINNED[(seed, lane)]
    assert scalar_words(seed, lane, 6).tolist() == PINNED[(seed, lane)]


def test_pinned_word_far():
    # word 999999 of seed 0x0123456789ABCDEF, lane 1, from the same C program
    assert xoroshiro_lane_words(0x0123456789ABCDEF, 1, 10**6)[-1] == 0xB42F7D19


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 64, 1000, 1023])
def test_vectorised_equals_scalar_small(n):
    rng = np.random.default_rng(n)
    for lane in (0, 3, 7):
        seed = int(rng.integers(0, 2**64, dtype=np.uint64))
        got = xoroshiro_lane_words(seed, lane, n)
        assert got.dtype == np.uint32 and got.shape == (n,)
        np.testing.assert_array_equal(got, scalar_words(seed, lane, n))


def test_vectorised_equals_scalar_across_blocks():
    # past the doubling phase: several jumps of one whole block, ending in a partial block
    block = 1 << E._BLOCK_LOG2
    n = 2 * block + 777
    seed = 0xDEADBEEFCAFEF00D
    np.testing.assert_array_equal(xoroshiro_lane_words(seed, 5, n), scalar_words(seed, 5, n))
    # all lanes at once (as entropy_model does) equals lane by lane
    many = E._prng_words(seed, 8, block + 3)
    for lane in range(8):
        np.testing.assert_array_equal(many[:, lane], xoroshiro_lane_words(seed, lane, block + 3))


def test_model_shape_at_a_million_words():
    w = xoroshiro_lane_words(1, 0, 10**6)
    assert w.shape == (10**6,) and w.dtype == np.uint32


@pytest.mark.parametrize("bad", [dict(seed=-1), dict(seed=2**64), dict(lane=8), dict(n=-1)])
def test_model_validation(bad):
    args = dict(seed=1, lane=0, n=4) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        xoroshiro_lane_words(**args)


def test_prng_statistics():
    """Per-bit frequencies, byte histogram and uniformity of 10^6 words, fixed seed.

    All p-values must exceed 1e-4 (for a correct generator and this fixed seed they do; a
    broken output function or stuck bit gives p ~ 0).
    """
    n = 10**6
    w = xoroshiro_lane_words(0x5EED, 2, n)
    bits = (w[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    ones = bits.sum(axis=0)
    # per-bit frequency: chi-square over 32 bits, one degree of freedom each
    chi2 = ((2 * ones - n) ** 2 / n).sum()
    assert stats.chi2.sf(chi2, 32) > 1e-4
    assert np.all(np.abs(ones - n / 2) < 5 * np.sqrt(n) / 2)
    # health-test sample byte (word[24:32]): chi-square over 256 cells
    hist = np.bincount(w >> 24, minlength=256)
    assert stats.chisquare(hist).pvalue > 1e-4
    # KS of the words as uniform numbers in [0, 1)
    assert stats.kstest(w / 2.0**32, "uniform").pvalue > 1e-4
    # lanes are not copies of each other: correlation of lane 2 with lane 3
    w3 = xoroshiro_lane_words(0x5EED, 3, n)
    assert abs(np.corrcoef(w.astype(float), w3.astype(float))[0, 1]) < 5 / np.sqrt(n)


# ---------------------------------------------------------------------------- Xoroshiro128ppLanes

@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_xoroshiro_lanes_gateware(lanes, run_seeded_generator):
    rng = np.random.default_rng(100 + lanes)
    cycles = 700
    advance = rng.random(cycles) < 0.6
    load = np.zeros(cycles, dtype=bool)
    load[[250, 251, 480]] = True                      # reloads, one back to back
    seeds = rng.integers(0, 2**64, size=cycles, dtype=np.uint64)
    advance[480] = True                               # load wins over advance

    # expected: a word index into the words of the current seed (seed 0 after reset)
    ref = {}

    def expect(seed, k):
        if seed not in ref:
            ref[seed] = np.stack([xoroshiro_lane_words(seed, p, cycles + 1)
                                  for p in range(lanes)], axis=1)
        return ref[seed][k]

    dut = Xoroshiro128ppLanes(lanes)
    assert len(dut.words) == 32 * lanes
    # the seed presented on the clock before the load
    got, want = run_seeded_generator(dut, seeds, load, advance, lambda ctx: split_lanes(ctx.get(dut.words), lanes),
                                     lambda seed, k: expect(seed, k).tolist(), seed_lag=1)
    assert got == want


# ---------------------------------------------------------------------------- EntropySource

class EntropyBench:
    """Drives an EntropySource clock by clock and records its outputs.

    ``stim`` holds per-clock arrays: run, select_qrng, valid, payload (n, lanes), clear,
    load_seed, seed. Records per clock every output and checks the invariants of stopped
    clocks; ``running()`` returns the recorded outputs at running clocks in the format of
    :func:`entropy_model`, and the model's ``clear`` input.
    """

    def __init__(self, dut, stim, rct_cutoff, apt_cutoff):
        self.dut, self.stim = dut, stim
        self.rct_cutoff, self.apt_cutoff = rct_cutoff, apt_cutoff
        self.rec = []

    def run(self):
        dut, s, lanes = self.dut, self.stim, self.dut.lanes

        async def tb(ctx):
            ctx.set(dut.rct_cutoff, self.rct_cutoff)
            ctx.set(dut.apt_cutoff, self.apt_cutoff)
            for t in range(len(s["run"])):
                ctx.set(dut.run, int(s["run"][t]))
                ctx.set(dut.select_qrng, int(s["select_qrng"][t]))
                ctx.set(dut.qrng.valid, int(s["valid"][t]))
                ctx.set(dut.qrng.payload, join_lanes(s["payload"][t]))
                ctx.set(dut.clear_alarm, int(s["clear"][t]))
                ctx.set(dut.load_seed, int(s["load_seed"][t]))
                ctx.set(dut.seed, int(s["seed"][t]))
                self.rec.append(dict(
                    words=split_lanes(ctx.get(dut.words), lanes),
                    ready=ctx.get(dut.qrng.ready),
                    ok=ctx.get(dut.ok), ok_unless_fire=ctx.get(dut.ok_unless_fire),
                    underrun=ctx.get(dut.underrun),
                    rct_fire=[(ctx.get(dut.rct_fire) >> p) & 1 for p in range(lanes)],
                    apt_fire=[(ctx.get(dut.apt_fire) >> p) & 1 for p in range(lanes)],
                    alarm_rct=ctx.get(dut.alarm_rct), alarm_apt=ctx.get(dut.alarm_apt),
                ))
                await ctx.tick()

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(tb)
        sim.run()
        return self

    def check_stopped_clocks(self):
        prev = dict(alarm_rct=0, alarm_apt=0)
        for t, r in enumerate(self.rec):
            # ok splits into ok_unless_fire and this clock's fires (Alice registers them apart)
            assert r["ok"] == (r["ok_unless_fire"] and not any(r["rct_fire"]) and not any(r["apt_fire"])), t
            if not self.stim["run"][t]:
                assert (r["ok"], r["underrun"], r["ready"]) == (0, 0, 0), t
                assert not any(r["rct_fire"]) and not any(r["apt_fire"]), t
                for a in ("alarm_rct", "alarm_apt"):
                    assert r[a] == (prev[a] and not self.stim["clear"][t]), (t, a)
            prev = r

    def running(self):
        run = self.stim["run"].astype(bool)
        idx = np.flatnonzero(run)
        # a clear at a stopped clock takes effect at the next running clock
        pending = np.cumsum(self.stim["clear"])
        before = np.concatenate([[0], pending[idx][:-1]])
        clear = (pending[idx] - before) > 0
        rec = [self.rec[t] for t in idx]
        got = {
            "words": np.array([r["words"] for r in rec], dtype=np.uint32),
            "ok": np.array([r["ok"] for r in rec], dtype=bool),
            "underrun": np.array([r["underrun"] for r in rec], dtype=bool),
            "rct_fire": np.array([r["rct_fire"] for r in rec], dtype=bool),
            "apt_fire": np.array([r["apt_fire"] for r in rec], dtype=bool),
            "alarm_rct": np.array([r["alarm_rct"] for r in rec], dtype=bool),
            "alarm_apt": np.array([r["alarm_apt"] for r in rec], dtype=bool),
        }
        return idx, clear, got


def make_stim(rng, cycles, lanes, *, p_run=0.8, select_qrng=0, p_valid=1.0, p_clear=0.0):
    return {
        "run": rng.random(cycles) < p_run,
        "select_qrng": np.full(cycles, select_qrng),
        "valid": rng.random(cycles) < p_valid,
        "payload": rng.integers(0, 2**32, size=(cycles, lanes), dtype=np.uint32),
        "clear": rng.random(cycles) < p_clear,
        "load_seed": np.zeros(cycles, dtype=bool),
        "seed": np.zeros(cycles, dtype=np.uint64),
    }


def assert_model_equal(got, want):
    for key in ("words", "ok", "underrun", "rct_fire", "apt_fire", "alarm_rct", "alarm_apt"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("lanes,rct,apt", [(4, 8, 36), (2, 2, 3)])
def test_entropy_source_prng(lanes, rct, apt):
    """PRNG mode, run toggling; with cutoffs (2, 3) random data fires often, and the
    alarms are cleared at random clocks, some of them stopped."""
    rng = np.random.default_rng(7 + lanes)
    stim = make_stim(rng, 2500, lanes, p_run=0.7, select_qrng=0,
                     p_valid=0.5, p_clear=0.0 if rct == 8 else 0.004)
    stim["load_seed"][1] = True                       # load at a stopped clock (the seed is
    stim["run"][:2] = False                           # registered: presented since clock 0)
    stim["seed"][:] = 0x1234_5678_9ABC_DEF0
    bench = EntropyBench(EntropySource(lanes), stim, rct, apt).run()
    bench.check_stopped_clocks()
    idx, clear, got = bench.running()
    want = entropy_model(lanes, 0x1234_5678_9ABC_DEF0, len(idx), rct_cutoff=rct,
                         apt_cutoff=apt, clear=clear)
    assert_model_equal(got, want)
    if rct == 8:
        assert want["ok"].all()
    else:
        assert want["rct_fire"].sum() > 5 and want["apt_fire"].sum() >= 3
        assert clear.sum() >= 4 and (~want["ok"]).sum() > 100 and want["ok"].sum() > 100
    # the PRNG holds its word at stopped clocks
    for t in range(1, len(stim["run"])):
        if not stim["run"][t - 1] and not stim["load_seed"][t - 1]:
            assert bench.rec[t]["words"] == bench.rec[t - 1]["words"]


def qrng_payload(rng, cycles, lanes):
    """QRNG words: random, with a biased stretch and stuck-at stretches."""
    w = rng.integers(0, 2**32, size=(cycles, lanes), dtype=np.uint32)
    # biased: every bit of the top byte is 1 with p = 0.9
    b = slice(cycles * 3 // 5, min(cycles * 3 // 5 + 400, cycles))
    top = (rng.random((b.stop - b.start, lanes, 8)) < 0.9) @ (1 << np.arange(8))
    w[b] = (w[b] & 0xFFFFFF) | (top.astype(np.uint32) << 24)
    w[300:400, 0] = 0xA5000000 | (w[300:400, 0] & 0xFFFFFF)      # top byte stuck: RCT + APT
    if lanes > 1:
        w[900:920, 1] = 0x5A123456                                # whole word stuck
    return w


@pytest.mark.parametrize("lanes", [1, 4])
def test_entropy_source_qrng(lanes):
    """QRNG mode: valid toggling (underruns), stuck-at and biased words fire the tests,
    CLEAR_ALARM mid-run (at running and stopped clocks) clears and restarts them."""
    rng = np.random.default_rng(21 + lanes)
    cycles = 2500
    stim = make_stim(rng, cycles, lanes, p_run=0.85, select_qrng=1, p_valid=0.8)
    stim["payload"] = qrng_payload(rng, cycles, lanes)
    stim["clear"][[300, 600, 1200, 1300, 1301, 2200]] = True
    stim["run"][[1300, 1301]] = False
    stim["run"][300] = stim["valid"][300] = True      # a window starts on the stuck lane 0
    rct, apt = 8, 36
    bench = EntropyBench(EntropySource(lanes), stim, rct, apt).run()
    bench.check_stopped_clocks()
    idx, clear, got = bench.running()
    want = entropy_model(lanes, 0, len(idx), rct_cutoff=rct, apt_cutoff=apt, select_qrng=True,
                         qrng_words=stim["payload"][idx], qrng_valid=stim["valid"][idx],
                         clear=clear)
    assert_model_equal(got, want)
    ready = np.array([r["ready"] for r in bench.rec], dtype=bool)
    np.testing.assert_array_equal(ready, stim["run"])
    assert want["underrun"].sum() > 100
    assert want["alarm_rct"].any() and want["alarm_apt"].any() and want["ok"].any()
    assert clear.sum() == 5                       # 1300/1301 stopped: one clear later


def test_entropy_source_qrng_piecewise_reference():
    """The same QRNG run compared piecewise against the model without ``clear``: each
    stretch between clears is an independent run from reset (a cross-check of ``clear``)."""
    rng = np.random.default_rng(5)
    cycles, lanes = 1500, 2
    stim = make_stim(rng, cycles, lanes, p_run=0.9, select_qrng=1, p_valid=0.9)
    stim["payload"] = qrng_payload(rng, cycles, lanes)
    stim["clear"][[700, 1000]] = True
    stim["run"][[700, 1000]] = True
    bench = EntropyBench(EntropySource(lanes), stim, 8, 36).run()
    idx, clear, got = bench.running()
    cuts = [0, *np.flatnonzero(clear), len(idx)]
    for a, b in zip(cuts[:-1], cuts[1:]):
        t = idx[a:b]
        want = entropy_model(lanes, 0, b - a, rct_cutoff=8, apt_cutoff=36, select_qrng=True,
                             qrng_words=stim["payload"][t], qrng_valid=stim["valid"][t])
        assert_model_equal({k: v[a:b] for k, v in got.items()}, want)
    assert got["alarm_rct"][:cuts[1]].any()


def test_entropy_source_switch_sources():
    """select_qrng toggling: the PRNG advances only at running clocks that use it, and the
    health tests see one sequence of samples from both sources. The model is composed from
    entropy_model: PRNG words at the PRNG clocks form a QRNG-like input that is always valid."""
    rng = np.random.default_rng(11)
    cycles, lanes = 2000, 2
    stim = make_stim(rng, cycles, lanes, p_run=0.8, p_valid=0.7, p_clear=0.002)
    sel = np.repeat(rng.random(cycles // 50) < 0.5, 50)      # switch every 50 clocks or so
    stim["select_qrng"] = sel
    stim["payload"] = qrng_payload(rng, cycles, lanes)
    bench = EntropyBench(EntropySource(lanes), stim, 5, 4).run()
    bench.check_stopped_clocks()
    idx, clear, got = bench.running()
    use_q = sel[idx]
    mixed = stim["payload"][idx].copy()
    mixed[~use_q] = E._prng_words(0, lanes, int((~use_q).sum()))
    want = entropy_model(lanes, 0, len(idx), rct_cutoff=5, apt_cutoff=4, select_qrng=True,
                         qrng_words=mixed, qrng_valid=stim["valid"][idx] | ~use_q,
                         clear=clear)
    assert_model_equal(got, want)
    assert want["underrun"].any() and want["alarm_rct"].any() and want["alarm_apt"].any()


def test_entropy_source_fire_in_clear_clock():
    """Cutoffs 1: the first sample after a restart fires at once, so a CLEAR_ALARM clock
    shows its own fire in the alarm (``alarm_t = (alarm_{t-1} & ~clear_t) | fire_t``)."""
    rng = np.random.default_rng(4)
    cycles, lanes = 300, 1
    stim = make_stim(rng, cycles, lanes, p_run=0.9)
    stim["clear"][[50, 120, 121, 200]] = True
    stim["run"][[50, 120, 121, 200]] = True
    bench = EntropyBench(EntropySource(lanes), stim, 1, 1).run()
    idx, clear, got = bench.running()
    want = entropy_model(lanes, 0, len(idx), rct_cutoff=1, apt_cutoff=1, clear=clear)
    assert_model_equal(got, want)
    assert want["rct_fire"][clear].all() and want["apt_fire"][clear].all()
    assert want["alarm_rct"][clear].all() and not want["ok"][clear].any()


@pytest.mark.parametrize("has_prng,has_qrng", [(True, False), (False, True)])
def test_entropy_source_single_source(has_prng, has_qrng):
    rng = np.random.default_rng(3)
    cycles, lanes = 600, 2
    stim = make_stim(rng, cycles, lanes, p_run=0.8, p_valid=0.7)
    stim["select_qrng"] = rng.random(cycles) < 0.5            # must be ignored
    stim["payload"] = qrng_payload(rng, cycles, lanes)
    bench = EntropyBench(EntropySource(lanes, has_prng=has_prng, has_qrng=has_qrng),
                         stim, 8, 36).run()
    bench.check_stopped_clocks()
    idx, clear, got = bench.running()
    want = entropy_model(lanes, 0, len(idx), rct_cutoff=8, apt_cutoff=36,
                         select_qrng=has_qrng, qrng_words=stim["payload"][idx],
                         qrng_valid=stim["valid"][idx])
    assert_model_equal(got, want)
    ready = np.array([r["ready"] for r in bench.rec], dtype=bool)
    np.testing.assert_array_equal(ready, stim["run"] & has_qrng)


def test_entropy_source_reload_while_running():
    """LOAD_SEED at a running clock: that clock consumes the old word, the next clock
    starts the new seed's words."""
    rng = np.random.default_rng(9)
    cycles, lanes = 300, 2
    stim = make_stim(rng, cycles, lanes, p_run=1.0)
    stim["load_seed"][100] = True
    stim["seed"][:] = 77
    bench = EntropyBench(EntropySource(lanes), stim, 8, 36).run()
    _, _, got = bench.running()
    np.testing.assert_array_equal(got["words"][:101], E._prng_words(0, lanes, 101))
    np.testing.assert_array_equal(got["words"][101:], E._prng_words(77, lanes, cycles - 101))


def test_entropy_source_validation():
    with pytest.raises(ValueError, match="has_prng"):
        EntropySource(2, has_prng=False, has_qrng=False)
    with pytest.raises(ValueError, match="lanes"):
        EntropySource(9)
    with pytest.raises(ValueError, match="qrng_words"):
        entropy_model(2, 0, 10, rct_cutoff=8, apt_cutoff=36, select_qrng=True)


def test_entropy_model_shapes():
    n, lanes = 10**6, 4
    r = entropy_model(lanes, 1, n, rct_cutoff=8, apt_cutoff=36)
    assert r["words"].shape == (n, lanes) and r["words"].dtype == np.uint32
    for k in ("ok", "underrun", "alarm_rct", "alarm_apt"):
        assert r[k].shape == (n,) and r[k].dtype == bool
    for k in ("rct_fire", "apt_fire"):
        assert r[k].shape == (n, lanes) and r[k].dtype == bool
    assert r["ok"].all() and not r["underrun"].any()
