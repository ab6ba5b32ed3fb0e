"""Eavesdropping through the channel: intercept-resend, photon-number splitting, beam splitting.

Measured per-class statistics against the analytic expectations of the same attack (exact
binomial tests at the 3-sigma equivalent), and what each attack does to the statistics Alice
and Bob see: intercept-resend raises the QBER to 25 %; PNS keeps the signal gain and QBER
honest but collapses the decoy gain and the decoy estimate of the single-photon yield
(Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005)); beam splitting leaves every statistic honest.
"""
import numpy as np
import pytest

from qkdlink.cosim.channel import (BeamSplitting, Channel, InterceptResend,
                                   expected_statistics, measured_statistics, pns_preserving_signal_gain,
                                   random_codes, y1_lower_bound)
from qkdlink.cosim.channel.measure import binomial_tail
from qkdlink.cosim.channel.eve import EVE_BEAM_SPLIT, EVE_INTERCEPT_RESEND, EVE_PNS_BLOCKED, EVE_PNS_KEPT


def _measure(cfg, slots, seed, eve=None):
    rng = np.random.default_rng(seed)
    codes = random_codes(slots, cfg.source, rng)
    det = Channel(cfg, seed=seed + 1, eve=eve).propagate(codes, 0)
    return det, measured_statistics(det, codes, 0, np.random.default_rng(seed + 2))


def _check_classes(meas, exp, binomial_check, tag, classes=("signal", "decoy")):
    for c in classes:
        m, e = meas[c], exp[c]
        binomial_check(m.detections, m.n_slots, e.expected_gain, f"{tag} {c} gain")
        binomial_check(m.errors, m.sifted, e.expected_qber, f"{tag} {c} QBER")


def test_intercept_resend_on_every_pulse_gives_25_percent(link, binomial_check):
    cfg = link(channel=dict(length_km=10.0, misalignment=0.0), detectors=dict(dead_time_ns=0.0))
    det, meas = _measure(cfg, 2_000_000, 11, InterceptResend(1.0))
    m = meas["signal"]
    binomial_check(m.errors, m.sifted, 0.25, "intercept-resend signal QBER vs 25 %")
    exp = expected_statistics(cfg, eve=InterceptResend(1.0))
    assert exp["signal"].expected_qber == pytest.approx(0.25, abs=2e-4)       # dark counts only
    _check_classes(meas, exp, binomial_check, "IR 100 %")
    assert np.all(det.eve[det.is_photon] == EVE_INTERCEPT_RESEND)


def test_no_eve_gives_the_baseline_and_half_the_pulses_half_the_excess(link, binomial_check):
    cfg = link(channel=dict(length_km=10.0, misalignment=0.02), detectors=dict(dead_time_ns=0.0))
    _, honest = _measure(cfg, 2_000_000, 12)
    base = expected_statistics(cfg)
    _check_classes(honest, base, binomial_check, "no Eve")
    assert base["signal"].expected_qber == pytest.approx(0.02, abs=1e-3)
    _, half = _measure(cfg, 2_000_000, 13, InterceptResend(0.5))
    exp = expected_statistics(cfg, eve=InterceptResend(0.5))
    _check_classes(half, exp, binomial_check, "IR 50 %")
    assert 0.12 < exp["signal"].expected_qber < 0.15        # ~ q/4 + (1 - q/2) e_d


def test_intercept_resend_with_a_weak_coherent_resend(link, binomial_check):
    cfg = link(channel=dict(length_km=25.0, misalignment=0.01), detectors=dict(dead_time_ns=50.0))
    eve = InterceptResend(1.0, resend_mu=0.8)
    _, meas = _measure(cfg, 3_000_000, 14, eve)
    exp = expected_statistics(cfg, eve=eve)
    _check_classes(meas, exp, binomial_check, "IR coherent")
    binomial_check(meas["signal"].double_clicks + meas["signal"].cross_clicks, meas["signal"].n_slots,
                   exp["signal"].double_click_probability + exp["signal"].cross_click_probability,
                   "IR coherent multi-clicks")


# (length, Eve must attenuate, decoy gain / honest below, Y1 lower bound / honest below)
PNS_CASES = [(20.0, False, 0.8, 0.7), (80.0, True, 0.4, 0.0)]


@pytest.mark.parametrize("length_km, attenuates, decoy_ratio, y1_ratio", PNS_CASES)
def test_pns_keeps_the_signal_gain_and_the_decoys_expose_it(link, binomial_check, length_km, attenuates,
                                                            decoy_ratio, y1_ratio):
    cfg = link(channel=dict(length_km=length_km, misalignment=0.01), detectors=dict(dead_time_ns=0.0))
    eve = pns_preserving_signal_gain(cfg)
    # short link: blocking part of the single photons suffices; long link: Eve must block all
    # of them and attenuate her (lossless) line as well
    assert (eve.forward_transmittance < 1.0) == attenuates
    assert (eve.block_single_fraction < 1.0) == (not attenuates)
    slots = 4_000_000 if attenuates else 2_000_000
    det, meas = _measure(cfg, slots, 15, eve)
    honest = expected_statistics(cfg)
    attacked = expected_statistics(cfg, eve=eve)
    assert attacked["signal"].expected_gain == pytest.approx(honest["signal"].expected_gain, rel=1e-9)
    _check_classes(meas, attacked, binomial_check, f"PNS {length_km} km")
    # invisible in the signal: gain and QBER agree with the honest expectation
    binomial_check(meas["signal"].detections, meas["signal"].n_slots, honest["signal"].expected_gain,
                   "PNS signal gain vs honest")
    # visible in the decoy: its gain is far below the honest one ...
    d, hd = meas["decoy"], honest["decoy"]
    assert d.gain < decoy_ratio * hd.expected_gain
    assert binomial_tail(d.detections, d.n_slots, hd.expected_gain) < 1e-12
    # ... and the decoy estimate of the single-photon yield collapses
    mu, nu = cfg.source.mu_signal, cfg.source.mu_decoy
    y1_honest = y1_lower_bound(honest["signal"].expected_gain, honest["decoy"].expected_gain,
                               honest["vacuum"].expected_gain, mu, nu)
    y1_pns = y1_lower_bound(meas["signal"].gain, meas["decoy"].gain, meas["vacuum"].gain, mu, nu)
    assert y1_honest > 0 and y1_pns < y1_ratio * y1_honest
    # truth: Eve holds a photon of most multi-photon pulses that Bob detects
    sig = det.is_photon
    assert np.all(det.eve[sig & (det.photons == 1)] != EVE_PNS_KEPT)
    assert np.all(det.eve[sig & (det.photons >= 2)] == EVE_PNS_KEPT)
    assert not np.any(sig & (det.eve == EVE_PNS_BLOCKED))


def test_beam_splitting_changes_nothing_bob_can_see(link, binomial_check):
    cfg = link(channel=dict(length_km=50.0), detectors=dict(dead_time_ns=50.0, afterpulse_probability=0.05))
    det, meas = _measure(cfg, 4_000_000, 16, BeamSplitting())
    honest = expected_statistics(cfg)
    assert expected_statistics(cfg, eve=BeamSplitting())["signal"].expected_gain == honest["signal"].expected_gain
    _check_classes(meas, honest, binomial_check, "beam splitting", classes=("signal", "decoy", "vacuum"))
    # Eve holds a photon in the slots of some of Bob's detections: multi-photon pulses only
    sig = det.is_photon
    assert np.any(det.eve[sig] == EVE_BEAM_SPLIT)
    assert np.all(det.photons[sig & (det.eve == EVE_BEAM_SPLIT)] >= 2)
