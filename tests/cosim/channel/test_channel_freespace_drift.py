"""Satellite downlink pass (geometry, loss against the Micius figures, the channel over a
pass) and the polarisation drift (Wiener statistics, ensemble mean, QBER of one realisation)."""
import numpy as np
import pytest

from qkdlink.cosim.channel import (Channel, PolarisationDrift, SatellitePass, expected_statistics,
                                   measured_statistics, random_codes)
from qkdlink.cosim.channel.freespace import (MICIUS_FAR_LOSS_DB, MICIUS_FAR_RANGE_KM, MICIUS_NEAR_LOSS_DB,
                                             MICIUS_NEAR_RANGE_KM)
from qkdlink.cosim.channel.measure import click_masks, squash
from qkdlink.cosim.channel.source import decode_codes


@pytest.mark.parametrize("max_elevation_deg", [90.0, 60.0])
def test_pass_peaks_at_culmination_and_is_symmetric(max_elevation_deg):
    sat = SatellitePass(max_elevation_deg=max_elevation_deg)
    t = np.linspace(-sat.visible_half_width_s(), sat.visible_half_width_s(), 2001)
    eta = sat.transmittance(t)
    assert np.argmax(eta) == 1000 and sat.elevation_deg(0.0) == pytest.approx(max_elevation_deg, abs=1e-9)
    assert np.allclose(eta, eta[::-1], rtol=1e-12, atol=0)
    assert np.all(np.diff(eta[1000:]) < 0)                     # falls monotonically after culmination
    assert sat.elevation_deg(t[0]) == pytest.approx(sat.min_elevation_deg, abs=1e-6)
    assert sat.transmittance(t[0] - 1.0) == 0.0                  # below the horizon mask


def test_loss_lies_in_the_micius_range():
    """Liao et al., Nature 549, 43 (2017): ~22 dB at 645 km to ~35 dB at 1,200 km; zenith
    (500 km, overhead) is the best case; every point of the pass between those ranges is
    between those losses."""
    sat = SatellitePass()
    assert sat.loss_db_at_range(MICIUS_NEAR_RANGE_KM) == pytest.approx(MICIUS_NEAR_LOSS_DB, abs=0.5)
    assert sat.loss_db_at_range(MICIUS_FAR_RANGE_KM) == pytest.approx(MICIUS_FAR_LOSS_DB, abs=0.5)
    t = np.linspace(0, sat.visible_half_width_s(), 5000)
    d = sat.range_km(t)
    inside = (d >= MICIUS_NEAR_RANGE_KM) & (d <= MICIUS_FAR_RANGE_KM)
    loss = sat.loss_db(t)
    assert inside.sum() > 100
    assert np.all((loss[inside] > MICIUS_NEAR_LOSS_DB - 0.5) & (loss[inside] < MICIUS_FAR_LOSS_DB + 0.5))
    assert 15.0 < sat.loss_db(0.0) < MICIUS_NEAR_LOSS_DB


def test_orbit_geometry():
    sat = SatellitePass()
    assert sat.range_km(0.0) == pytest.approx(500.0, abs=1e-6)
    assert sat.orbital_period_s / 60 == pytest.approx(94.5, abs=0.5)        # ~95 min (REFERENCES.md)
    assert 5 * 60 < 2 * sat.visible_half_width_s() < 9 * 60                  # a few minutes above 10 deg
    t = 123.0
    assert sat.delay_ps(t) == pytest.approx(sat.range_km(t) / 299_792.458 * 1e12, rel=1e-12)
    assert sat.elevation_for_range_deg(sat.range_km(t)) == pytest.approx(sat.elevation_deg(t), abs=1e-9)


def test_channel_over_a_satellite_pass(link, binomial_check):
    """A 3 ms window 100 s before culmination: the gain matches the expectation at that
    transmittance, and the shrinking light time pulls clicks earlier (Doppler)."""
    cfg = link(detectors=dict(dead_time_ns=0.0, timing_jitter_ps=0.0), source=dict(mu_signal=0.8))
    sat = SatellitePass()
    ch = Channel(cfg, seed=21, downlink=sat, pass_time_s=-100.0)
    n = 4_000_000
    codes = random_codes(n, cfg.source, np.random.default_rng(22))
    det = ch.propagate(codes, 0)
    meas = measured_statistics(det, codes, 0, np.random.default_rng(23))
    exp = expected_statistics(cfg, transmittance=ch.transmittance)
    for c in ("signal", "decoy"):
        binomial_check(meas[c].detections, meas[c].n_slots, exp[c].expected_gain, f"satellite {c} gain")
    assert np.array_equal(det.sample, ch.clock.sample_index(ch.pulse_time_ps(det.slot)))
    late = det.slot[-1]
    shift_ps = sat.delay_ps(-100.0 + late * ch.slot_period_ps * 1e-12) - sat.delay_ps(-100.0)
    assert shift_ps < -1000                                          # approaching: arrivals earlier
    assert det.sample[-1] - late * ch.K == np.floor(0.5 + shift_ps / ch.sample_period_ps)


def test_drift_is_a_wiener_process_with_the_configured_rate():
    rng = np.random.default_rng(31)
    drift = PolarisationDrift(0.01, 3.0, rng)
    t = np.cumsum(rng.exponential(1e-6, 200_000))
    phi = drift.angles_rad(t)
    inc = np.diff(phi) / np.sqrt(np.diff(t))
    assert abs(inc.std() / 3.0 - 1) < 3 / np.sqrt(2 * inc.size)
    assert abs(inc.mean()) < 3 * 3.0 / np.sqrt(inc.size)
    with pytest.raises(ValueError, match="backwards"):
        drift.angles_rad([t[-1] - 1e-3])


def test_drift_raises_the_ensemble_qber_over_time():
    """E[sin^2 phi(t)] = (1 - cos(2 phi0) exp(-2 sigma^2 t)) / 2, from e_d towards 1/2."""
    sigma, t = 2.0, 0.05
    finals = np.array([PolarisationDrift(0.02, sigma, np.random.default_rng(s)).angles_rad([t])[0]
                       for s in range(4000)])
    e = np.sin(finals) ** 2
    model = PolarisationDrift(0.02, sigma, np.random.default_rng(0))
    assert model.mean_error(0.0) == pytest.approx(0.02)
    assert abs(e.mean() - model.mean_error(t)) < 3 * e.std() / np.sqrt(e.size)
    assert model.mean_error(t) > 0.15 and model.mean_error(10.0) == pytest.approx(0.5, abs=1e-6)
    assert model.mean_error(0.0) < model.mean_error_over(0.0, t) < model.mean_error(t)


def test_channel_errors_follow_the_realised_polarisation_angle(link, binomial_check):
    """Within one realisation the sifted errors of single-photon clicks have probability
    sin^2 of the angle at that slot; the QBER climbs with the drift."""
    cfg = link(channel=dict(length_km=0.0, misalignment=0.01, polarisation_drift_rad_per_sqrt_s=5.0),
               detectors=dict(dead_time_ns=0.0, dark_count_per_gate=1e-7), source=dict(mu_signal=0.2))
    n = 10_000_000
    codes = random_codes(n, cfg.source, np.random.default_rng(41))
    det = Channel(cfg, seed=42).propagate(codes, 0)
    mask = click_masks(det, n, 0)
    one = np.flatnonzero(mask)
    basis, bit = squash(mask[one], np.random.default_rng(43))
    a_bit, a_basis, _ = decode_codes(codes[one])
    angle = np.full(n, np.nan)
    angle[det.slot] = det.angle_rad
    clean = np.zeros(n, bool)
    clean[det.slot[(det.cause == 1) & (det.photons == 1)]] = True
    sel = (basis == a_basis) & clean[one]
    err = bit[sel] != a_bit[sel]
    p = np.sin(angle[one][sel]) ** 2
    sd = np.sqrt(np.sum(p * (1 - p)))
    assert abs(err.sum() - p.sum()) < 3 * sd, (err.sum(), p.sum(), sd)
    assert p.max() > 0.1                                         # the drift moved the QBER a lot
