"""The full link through the gateware agrees with the analytic expectations over a grid.

Each point co-simulates Alice and Bob gateware with the channel model between them
(:func:`qkdlink.cosim.fulllink.run_full_link`) and compares, per intensity class, the measured
gain and the QBER of the hardware-sifted key with :mod:`qkdlink.cosim.channel.expectations`:
a statistic passes if ``|measured - expected| <= 3 sigma`` (binomial sigma from the expected
value and the measured number of trials) plus a model tolerance of 0.2 % of the expected gain
where the dead-time / afterpulse approximation is used (its documented accuracy is 0.1 %), or
if its exact binomial tail is above the 3-sigma equivalent (few counts). Gains with fewer than
``MIN_EXPECTED`` expected detections and QBERs of fewer sifted bits are not tested. The grid spans distance 0-150 km, misalignment 0-5 %, dark counts
1e-7-1e-5 per gate, dead time on/off and afterpulsing on/off; at long distance more slots.

At 0 and 25 km (with dark counts 1e-5 and afterpulses) the detections outrun the 1 byte/clock host links: Bob's record FIFO drops rows and
Alice answers late queries LOST. The gain counts every record Bob's gateware produced (the
record digest proves them), so it is unaffected; the QBER is that of the sifted subset, which
the drops do not bias (they depend on timing, not on bit values).
"""
import pytest

from qkdlink.cosim.channel.eve import InterceptResend
from qkdlink.cosim.channel.measure import binomial_tail
from qkdlink.cosim.fulllink import run_full_link
from qkdlink.host.config import link_config_from_dict

pytestmark = pytest.mark.verilator

MIN_EXPECTED = 10          # expected detections of a class to test its gain; QBER: expected sifted
MODEL_TOL_REL = 2e-3       # dead-time / afterpulse approximation, relative to the expected gain
TAIL_3SIGMA = 0.0027       # two-sided normal tail beyond 3 sigma

# (length_km, misalignment, dark_count_per_gate, dead_time_ns, afterpulse_probability, slots)
GRID = [
    (0.0, 0.01, 1e-6, 50.0, 0.0, 1_000_000),
    (25.0, 0.05, 1e-5, 0.0, 0.05, 1_000_000),
    (50.0, 0.0, 1e-7, 50.0, 0.05, 1_000_000),
    (75.0, 0.03, 1e-6, 0.0, 0.0, 1_000_000),
    (100.0, 0.02, 1e-7, 100.0, 0.1, 2_000_000),
    (150.0, 0.01, 1e-5, 0.0, 0.0, 2_000_000),
    (150.0, 0.05, 1e-7, 50.0, 0.05, 3_000_000),
]
# Above ~0.035 detections per clock the testbench's hosts fall behind (record FIFO full,
# queries answered LOST): from this length on every grid point must sift every detection.
NO_DROPS_FROM_KM = 50.0


def grid_config(km, e_d, dark, dead_ns, ap):
    return link_config_from_dict({
        "channel": {"length_km": km, "misalignment": e_d},
        "detectors": {"dark_count_per_gate": dark, "dead_time_ns": dead_ns, "afterpulse_probability": ap}})


def deviations(report, model_tol_rel=0.0):
    """(tested rows, failing rows): ``(class, statistic, measured, expected, sigma, tail)``.

    A statistic fails if it is more than 3 binomial sigmas (+ the model tolerance) from the
    expectation *and* its exact two-sided binomial tail is below the 3-sigma equivalent
    (the normal sigma alone overstates a deviation of a few counts, e.g. 1 error in 8).
    """
    rows, bad = [], []
    for name, c in report["classes"].items():
        tests = []
        if c["expected_gain"] * c["sent_locked"] >= MIN_EXPECTED:
            tests.append(("gain", c["detected"], c["sent_locked"], c["expected_gain"], c["sigma_gain"],
                          model_tol_rel * c["expected_gain"]))
        if c["sifted"] >= MIN_EXPECTED:
            tests.append(("qber", c["errors"], c["sifted"], c["expected_qber"], c["sigma_qber"], 0.0))
        for what, k, n, e, s, tol in tests:
            m = k / n
            tail = binomial_tail(k, n, e)
            row = (name, what, m, e, s, tail)
            rows.append(row)
            if abs(m - e) > 3 * s + tol and tail < TAIL_3SIGMA:
                bad.append(row)
    return rows, bad


@pytest.mark.parametrize("point", GRID, ids=[f"{p[0]:g}km-e{p[1]:g}-d{p[2]:g}-dead{p[3]:g}-ap{p[4]:g}"
                                              for p in GRID])
def test_gains_and_qbers_agree_with_theory(point):
    km, e_d, dark, dead, ap, slots = point
    r = run_full_link(grid_config(km, e_d, dark, dead, ap), slots=slots, seed=1000 + GRID.index(point))
    assert r["model_agreement"], r["mismatches"]
    assert r["key_slots_identical"]
    assert r["locked_slots"] > 0.99 * r["slots"]
    rows, bad = deviations(r, MODEL_TOL_REL if (dead or ap) else 0.0)
    print(f"\n{point}: dropped {r['records_dropped']}, lost {r['sift_lost']}, {r['slots_per_s']:.0f} slots/s")
    for n, w, m, e, sd, tail in rows:
        print(f"  {n:<7}{w:<5} measured {m:.4e} expected {e:.4e} ({(m - e) / sd:+.2f} sigma, tail {tail:.3f})")
    assert {(n, w) for n, w, *_ in rows} >= {("signal", "gain"), ("signal", "qber")}
    assert not bad, bad
    # every record Bob's host received was answered by Alice (OK or LOST/FUTURE)
    queried = sum(c["queried"] for c in r["classes"].values())
    assert queried + r["sift_lost"] == r["detections"]
    if km >= NO_DROPS_FROM_KM:      # the host links keep up: every detection is sifted
        assert r["records_dropped"] == 0 and r["sift_lost"] == 0
        for c in r["classes"].values():
            assert c["queried"] == c["detected"]


def test_intercept_resend_gives_a_quarter_and_none_the_baseline():
    """Intercept-resend on every pulse: QBER 25 % (+ the channel's few errors) within 3 sigma;
    the same link and seed without Eve: the baseline QBER."""
    cfg = grid_config(25.0, 0.01, 1e-6, 50.0, 0.0)
    honest = run_full_link(cfg, slots=1_000_000, seed=77)
    attacked = run_full_link(cfg, slots=1_000_000, seed=77, channel_options={"eve": InterceptResend(1.0)})
    for r in (honest, attacked):
        assert r["model_agreement"], r["mismatches"]
        rows, bad = deviations(r, MODEL_TOL_REL)
        assert not bad, bad
    s = attacked["classes"]["signal"]
    assert attacked["channel"]["eve"] == {"attack": "InterceptResend", "fraction": 1.0, "resend_mu": None}
    assert abs(s["qber"] - 0.25) <= 3 * s["sigma_qber"] + abs(s["expected_qber"] - 0.25), s
    assert abs(s["expected_qber"] - 0.25) < 0.01
    b = honest["classes"]["signal"]
    assert honest["channel"]["eve"] is None
    assert b["expected_qber"] < 0.02 and abs(b["qber"] - b["expected_qber"]) <= 3 * b["sigma_qber"]
    assert s["qber"] > b["qber"] + 10 * s["sigma_qber"]
