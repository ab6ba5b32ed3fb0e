"""Measured gains, QBERs, detector clicks and multi-clicks of ``Channel.propagate`` against
the analytic expectations, across a grid of distance, misalignment, dark counts, dead time,
afterpulsing, intensity fluctuation, efficiency mismatch and clock geometry.

Comparisons are exact binomial tests (two-sided tail probability; the measured QBER is tested
conditionally on the measured number of sifted detections), so small counts are handled:

* primary (signal and decoy gain and QBER, 4 per grid point, 80 in all) and secondary
  (vacuum and blank classes, same-basis double and cross-basis clicks, clicks and
  afterpulses per detector, ~450 in all) are each held to 3 sigma *as a family*
  (Bonferroni: tail >= 0.27 % / 80, about 3.9 sigma per primary comparison, and
  0.27 % / 500, about 4.6 sigma per secondary one). Per comparison 3 sigma would fail about
  one comparison in 370 by chance alone: with these seeds the 0 km / 50 ns dead-time decoy
  gain came out at z = -3.08, and 4x10^7 slots at that point showed no bias (z within +-1.2);
* all z values of a point together: sum z^2 < dof + 5 sqrt(2 dof), which catches a systematic
  bias that moves many comparisons a little.

Seeds are fixed (1000 + grid index), not chosen. Dead time anti-correlates detections, so
the binomial sigma is slightly conservative there. The model itself was checked beyond this
grid with 4x10^7 slots per point (see ``docs/channel.md``).
"""
import numpy as np
import pytest
from scipy import stats
from qkdlink.cosim.channel import Channel, expected_statistics, measured_statistics, random_codes

PRIMARY = ("signal", "decoy")
PRIMARY_LEVEL = 2 * stats.norm.sf(3.0) / 80
SECONDARY_LEVEL = 2 * stats.norm.sf(3.0) / 500

# (name, slots, section overrides, geometry (S, P, clock_mhz) or None for the config's)
GRID = [
    ("0km-ideal", 1_000_000, dict(channel=dict(length_km=0.0, misalignment=0.0),
                                  detectors=dict(dark_count_per_gate=1e-7, dead_time_ns=0.0)), None),
    ("0km-dead50", 2_000_000, dict(channel=dict(length_km=0.0, misalignment=0.01),
                                   detectors=dict(dark_count_per_gate=1e-6, dead_time_ns=50.0)), None),
    ("0km-dead50-ap10", 2_000_000, dict(channel=dict(length_km=0.0, misalignment=0.05),
                                        detectors=dict(dark_count_per_gate=1e-5, dead_time_ns=50.0,
                                                       afterpulse_probability=0.1)), None),
    ("0km-ap10-nodead", 1_000_000, dict(channel=dict(length_km=0.0, misalignment=0.03),
                                        detectors=dict(dark_count_per_gate=1e-6, dead_time_ns=0.0,
                                                       afterpulse_probability=0.1)), None),
    ("0km-dead100-slow-clock", 2_000_000, dict(channel=dict(length_km=0.0, misalignment=0.02),
                                               detectors=dict(dark_count_per_gate=1e-6, dead_time_ns=100.0,
                                                              afterpulse_probability=0.05)), (2, 1, 100.0)),
    ("10km-dead-ap5", 2_000_000, dict(channel=dict(length_km=10.0, misalignment=0.02),
                                      detectors=dict(dark_count_per_gate=1e-7, dead_time_ns=50.0,
                                                     afterpulse_probability=0.05)), None),
    ("25km-dark1e-5", 2_000_000, dict(channel=dict(length_km=25.0, misalignment=0.0),
                                      detectors=dict(dark_count_per_gate=1e-5, dead_time_ns=0.0)), None),
    ("25km-fluct20", 2_000_000, dict(channel=dict(length_km=25.0, misalignment=0.05),
                                     source=dict(intensity_fluctuation_rel=0.2),
                                     detectors=dict(dark_count_per_gate=1e-6, dead_time_ns=50.0,
                                                    afterpulse_probability=0.1)), None),
    ("50km", 4_000_000, dict(channel=dict(length_km=50.0, misalignment=0.01),
                             detectors=dict(dark_count_per_gate=1e-7, dead_time_ns=0.0)), None),
    ("50km-dark1e-5-dead", 4_000_000, dict(channel=dict(length_km=50.0, misalignment=0.03),
                                           detectors=dict(dark_count_per_gate=1e-5, dead_time_ns=50.0)), None),
    ("50km-mismatch30", 4_000_000, dict(channel=dict(length_km=50.0, misalignment=0.05),
                                        detectors=dict(dark_count_per_gate=1e-6, dead_time_ns=0.0,
                                                       afterpulse_probability=0.05, efficiency_mismatch=0.3)),
     None),
    ("65km-defaults", 4_000_000, dict(), None),
    ("75km-ap10-S8P2", 4_000_000, dict(channel=dict(length_km=75.0, misalignment=0.0),
                                       detectors=dict(dark_count_per_gate=1e-6, dead_time_ns=50.0,
                                                      afterpulse_probability=0.1)), (8, 2, 200.0)),
    ("100km-eff30", 8_000_000, dict(channel=dict(length_km=100.0, misalignment=0.02),
                                    detectors=dict(efficiency=0.3, dark_count_per_gate=1e-7, dead_time_ns=0.0)),
     None),
    ("100km-dark1e-5-ap5", 4_000_000, dict(channel=dict(length_km=100.0, misalignment=0.05),
                                           detectors=dict(dark_count_per_gate=1e-5, dead_time_ns=50.0,
                                                          afterpulse_probability=0.05)), None),
    ("100km-dead200", 8_000_000, dict(channel=dict(length_km=100.0, misalignment=0.01),
                                      detectors=dict(efficiency=0.3, dark_count_per_gate=1e-6,
                                                     dead_time_ns=200.0)), None),
    ("125km-eff50-ap10", 8_000_000, dict(channel=dict(length_km=125.0, misalignment=0.03),
                                         detectors=dict(efficiency=0.5, dark_count_per_gate=1e-7, dead_time_ns=50.0,
                                                        afterpulse_probability=0.1)), None),
    ("150km-eff50", 10_000_000, dict(channel=dict(length_km=150.0, misalignment=0.0),
                                     source=dict(mu_signal=0.8, mu_decoy=0.2),
                                     detectors=dict(efficiency=0.5, dark_count_per_gate=1e-7, dead_time_ns=0.0)),
     None),
    ("150km-eff50-dead-ap5", 10_000_000, dict(channel=dict(length_km=150.0, misalignment=0.05),
                                              detectors=dict(efficiency=0.5, dark_count_per_gate=1e-6,
                                                             dead_time_ns=50.0, afterpulse_probability=0.05)), None),
    ("150km-dark-dominated", 4_000_000, dict(channel=dict(length_km=150.0, misalignment=0.02),
                                             detectors=dict(dark_count_per_gate=1e-5, dead_time_ns=0.0)), None),
]


def _run(link, name, slots, overrides, geometry, seed):
    cfg = link(**overrides)
    S, P, clock = geometry if geometry else (None, None, None)
    rng = np.random.default_rng(seed)
    codes = random_codes(slots, cfg.source, rng, p_blank=0.02)
    ch = Channel(cfg, S=S, P=P, clock_mhz=clock, seed=seed + 1)
    first = 12_345 + seed
    det = ch.propagate(codes, first)
    meas = measured_statistics(det, codes, first, np.random.default_rng(seed + 2))
    exp = expected_statistics(cfg, n_slots=slots, S=S, P=P, clock_mhz=clock, p_blank=0.02)
    return cfg, det, meas, exp


@pytest.mark.parametrize("name, slots, overrides, geometry", GRID, ids=[g[0] for g in GRID])
def test_statistics_agree_with_expectations(name, slots, overrides, geometry, link, binomial_check):
    seed = 1000 + [g[0] for g in GRID].index(name)
    cfg, det, meas, exp = _run(link, name, slots, overrides, geometry, seed)
    zs = []
    for c in ("signal", "decoy", "vacuum", "blank"):
        m, e = meas[c], exp[c]
        lvl = dict(level=PRIMARY_LEVEL if c in PRIMARY else SECONDARY_LEVEL)
        zs.append(binomial_check(m.detections, m.n_slots, e.expected_gain, f"{name} {c} gain", **lvl))
        if m.sifted:
            zs.append(binomial_check(m.errors, m.sifted, e.expected_qber, f"{name} {c} QBER", **lvl))
        zs.append(binomial_check(m.double_clicks, m.n_slots, e.double_click_probability, f"{name} {c} double",
                                 level=SECONDARY_LEVEL))
        zs.append(binomial_check(m.cross_clicks, m.n_slots, e.cross_click_probability, f"{name} {c} cross",
                                 level=SECONDARY_LEVEL))
    clicks = np.bincount(det.channel, minlength=4)
    for j in range(4):
        zs.append(binomial_check(int(clicks[j]), slots, exp.click_probability[j], f"{name} detector {j} clicks",
                                 level=SECONDARY_LEVEL))
    ap = np.bincount(det.channel[det.cause == 4], minlength=4)       # afterpulse-only clicks
    if cfg.detectors.afterpulse_probability > 0:
        ap_only = exp.afterpulse_probability * (1 - exp.event_probability)
        for j in range(4):
            zs.append(binomial_check(int(ap[j]), slots, ap_only[j], f"{name} detector {j} afterpulses",
                                     level=SECONDARY_LEVEL))
    else:
        assert ap.sum() == 0
    if cfg.detectors.dead_time_ns == 0:
        assert det.suppressed.sum() == 0
    # a systematic bias moves many comparisons the same way: the sum of z^2 stays near its dof
    zs = np.asarray([z for z in zs if np.isfinite(z)])
    assert np.sum(zs ** 2) < zs.size + 5 * np.sqrt(2 * zs.size), f"{name}: chi2 = {np.sum(zs ** 2):.1f} / {zs.size}"


def test_the_grid_covers_the_brief(link):
    """Distance 0..150 km, misalignment 0..5 %, dark 1e-7..1e-5, dead time and afterpulsing on/off."""
    cfgs = [link(**g[2]) for g in GRID]
    assert {c.channel.length_km for c in cfgs} >= {0.0, 50.0, 100.0, 150.0}
    assert {c.channel.misalignment for c in cfgs} >= {0.0, 0.05}
    assert {c.detectors.dark_count_per_gate for c in cfgs} >= {1e-7, 1e-6, 1e-5}
    assert {c.detectors.dead_time_ns > 0 for c in cfgs} == {True, False}
    assert {c.detectors.afterpulse_probability > 0 for c in cfgs} == {True, False}
    assert len(GRID) >= 20


def test_dead_time_matters_where_it_is_tested(link):
    """The high-rate dead-time points are in the regime where the correction is many sigma."""
    cfg = link(channel=dict(length_km=0.0), detectors=dict(dead_time_ns=50.0))
    with_dead = expected_statistics(cfg, n_slots=2_000_000)
    without = expected_statistics(link(channel=dict(length_km=0.0), detectors=dict(dead_time_ns=0.0)),
                                  n_slots=2_000_000)
    s = with_dead["signal"]
    assert (without["signal"].expected_gain - s.expected_gain) / s.sigma_gain > 20
    assert with_dead.live_fraction.min() < 0.85


def test_honest_gain_reduces_to_the_textbook_formula(link):
    """No dead time, no afterpulses, no fluctuation: the gain is 1 - (1 - d)^4 exp(-mu eta eta_B)
    (Ma et al. 2005 with Y0 = 1 - (1 - d)^4 for four detectors), and the QBER is e_d plus the
    dark-count term at low dark counts."""
    cfg = link(channel=dict(length_km=40.0, misalignment=0.02), detectors=dict(dead_time_ns=0.0))
    e = expected_statistics(cfg)
    eta = 10 ** (-(0.2 * 40 + 1.0) / 10) * 0.1
    d = cfg.detectors.dark_count_per_gate
    for c, mu in (("signal", 0.5), ("decoy", 0.1)):
        assert e[c].expected_gain == pytest.approx(1 - (1 - d) ** 4 * np.exp(-mu * eta), rel=1e-12)
        assert e[c].expected_qber == pytest.approx(0.02, abs=3e-3)
