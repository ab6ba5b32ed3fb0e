"""DetectionCombiner gateware vs combine_model; squashing statistics."""
import gc
import itertools
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator
from scipy import stats

from qkdlink.hdl.detection import (
    DETECTOR_BASIS, DETECTOR_BIT, Detection, DetectionCombiner, combine_model, detection_words,
    detections_value,
)


def _stimulus(P, rng):
    """All 16 click patterns x all P**4 lane assignments (random r), and all 16 patterns x
    all 4**P random words (random lanes); random fine times."""
    rows = []
    for pattern in range(16):
        for lanes in itertools.product(range(P), repeat=4):
            rows.append((pattern, lanes, int(rng.integers(0, 1 << (2 * P)))))
        for r in range(1 << (2 * P)):
            rows.append((pattern, tuple(int(x) for x in rng.integers(0, P, 4)), r))
    click = np.array([[(pat >> c) & 1 for c in range(4)] for pat, _, _ in rows], dtype=bool)
    lane = np.array([lanes for _, lanes, _ in rows], dtype=np.int64)
    fine = rng.integers(0, 8, size=(len(rows), 4))
    random = np.array([r for _, _, r in rows], dtype=np.uint64)
    return click, lane, fine, random


@pytest.mark.parametrize("P", [1, 2, 4])
def test_combiner_matches_model(P):
    rng = np.random.default_rng(100 + P)
    click, lane, fine, random = _stimulus(P, rng)
    want = detections_value(combine_model(click, lane, fine, random, P))
    dut = DetectionCombiner(P)
    got = []

    async def tb(ctx):
        for i in range(len(random)):
            ctx.set(dut.click, int(sum(int(b) << c for c, b in enumerate(click[i]))))
            for c in range(4):
                ctx.set(dut.lane[c], int(lane[i, c]))
                ctx.set(dut.fine[c], int(fine[i, c]))
            ctx.set(dut.random, int(random[i]))
            got.append(ctx.get(dut.detections.as_value()))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    got = np.array(got, dtype=np.uint64)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(click[i].tolist(), lane[i].tolist(), int(random[i]), hex(got[i]),
                            hex(want[i])) for i in bad[:5]]


def test_model_rules_single_lane():
    """The rules of docs/receiver.md, spelled out for every pattern and random pair (P = 1)."""
    pats = np.array([[(pat >> c) & 1 for c in range(4)] for pat in range(16)], dtype=bool)
    for r in range(4):
        r_basis, r_bit = r & 1, r >> 1
        fine = np.tile([1, 2, 3, 4], (16, 1))
        d = combine_model(pats, np.zeros((16, 4), int), fine, np.full(16, r, np.uint64), 1)
        for pat in range(16):
            chans = [c for c in range(4) if (pat >> c) & 1]
            got = {k: int(d[k][pat, 0]) for k in d}
            if not chans:
                assert got == dict(detected=0, basis=0, bit=0, fine=0, double=0, cross=0)
                continue
            bases = {DETECTOR_BASIS[c] for c in chans}
            basis = bases.pop() if len(bases) == 1 else r_basis
            in_basis = [c for c in chans if DETECTOR_BASIS[c] == basis]
            bit = DETECTOR_BIT[in_basis[0]] if len(in_basis) == 1 else r_bit
            want = dict(detected=1, basis=basis, bit=bit, fine=fine[0, in_basis[0]],
                        double=int(len(chans) > 1 and not bases and len(in_basis) > 1),
                        cross=int(len({DETECTOR_BASIS[c] for c in chans}) == 2))
            assert got == want, (pat, r)


def test_lane_out_of_range():
    """P = 1: a click in lane 1 (the port is 1 bit wide) matches no lane, in both."""
    click = np.ones((4, 4), bool)
    lane = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 0]])
    fine = np.tile([1, 2, 3, 4], (4, 1))
    random = np.array([0, 1, 2, 3], np.uint64)
    d = combine_model(click, lane, fine, random, 1)
    assert d["detected"][:, 0].tolist() == [False, True, True, True]
    assert d["basis"][:, 0].tolist() == [0, 0, 0, 1] and d["fine"][:, 0].tolist() == [0, 1, 2, 3]
    dut = DetectionCombiner(1)
    got = []

    async def tb(ctx):
        for i in range(4):
            ctx.set(dut.click, 15)
            for c in range(4):
                ctx.set(dut.lane[c], int(lane[i, c]))
                ctx.set(dut.fine[c], int(fine[i, c]))
            ctx.set(dut.random, int(random[i]))
            got.append(ctx.get(dut.detections.as_value()))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    assert got == detections_value(d).tolist()


def test_detection_layout():
    assert Detection.as_shape().size == 8
    d = combine_model(np.array([[1, 1, 0, 0]], bool), np.zeros((1, 4), int),
                      np.array([[5, 6, 0, 0]]), np.array([2], np.uint64), 1)
    # detected, basis Z, bit = r_bit = 1, fine of H = 5, double
    assert int(detection_words(d)[0, 0]) == 1 | (1 << 2) | (5 << 3) | (1 << 6)


def test_squashing_statistics():
    """Multi-clicks take their bit (and, across bases, their basis) from Bob's random bits:
    double clicks always use r_bit, and the squashed bits are balanced even when the
    detectors are very unbalanced (H clicks 9x as often as V, D 4x as often as A)."""
    rng = np.random.default_rng(7)
    n, P = 200_000, 2
    p_click = np.array([0.45, 0.05, 0.4, 0.1])
    click = rng.random((n, 4)) < p_click
    lane = rng.integers(0, P, size=(n, 4))
    fine = rng.integers(0, 8, size=(n, 4))
    random = rng.integers(0, 1 << (2 * P), size=n, dtype=np.uint64)
    d = combine_model(click, lane, fine, random, P)
    sh = (2 * np.arange(P)).astype(np.uint64)
    r_basis = (random[:, None] >> sh) & np.uint64(1)
    r_bit = (random[:, None] >> (sh + np.uint64(1))) & np.uint64(1)
    dbl, cross = d["double"], d["cross"]
    assert dbl.sum() > 2000 and cross.sum() > 2000
    assert not (dbl & cross).any()
    assert (d["bit"][dbl] == r_bit[dbl]).all()                   # double clicks use r_bit
    assert (d["basis"][cross] == r_basis[cross]).all()           # cross: basis = r_basis
    # cross-basis with both detectors of the chosen basis clicking: bit = r_bit as well
    hit = click[:, None, :] & (lane[:, None, :] == np.arange(P)[None, :, None])
    both = np.where(d["basis"] == 1, hit[..., 2] & hit[..., 3], hit[..., 0] & hit[..., 1])
    cross2 = cross & both
    assert cross2.sum() > 500
    assert (d["bit"][cross2] == r_bit[cross2]).all()
    for name, sel in (("double", d["bit"][dbl]), ("cross, two in basis", d["bit"][cross2]),
                      ("cross basis", d["basis"][cross])):
        counts = np.bincount(sel.astype(int), minlength=2)
        assert stats.chisquare(counts).pvalue > 1e-3, (name, counts)
    # single clicks are not randomised: their bits follow the (unbalanced) detectors
    single = d["detected"] & ~dbl & ~cross
    z = single & (d["basis"] == 0)
    assert d["bit"][z].mean() < 0.2


def test_parameter_check():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)      # the half-built component
        with pytest.raises(ValueError, match="slots_per_clock"):
            DetectionCombiner(3)
        gc.collect()
    with pytest.raises(ValueError, match="slots_per_clock"):
        combine_model(np.zeros((1, 4), bool), np.zeros((1, 4)), np.zeros((1, 4)), np.zeros(1), 3)
