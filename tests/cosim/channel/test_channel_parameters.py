"""Bad parameters raise ValueError naming the parameter and its allowed range."""
import numpy as np
import pytest

from qkdlink.cosim.channel import (Channel, InterceptResend, PhotonNumberSplitting, SampleClock, SatellitePass,
                                   expected_statistics, pns_preserving_signal_gain, random_codes)
from qkdlink.cosim.channel.detectors import Detectors
from qkdlink.cosim.channel.fibre import Fibre, PolarisationDrift
from qkdlink.cosim.channel.source import Source, decode_codes

CONFIG_CASES = [
    (dict(channel=dict(length_km=-3.0)), r"channel\.length_km = -3\.0: must be a number in \[0, 5000\] km"),
    (dict(channel=dict(loss_db_per_km=11.0)), r"channel\.loss_db_per_km = 11\.0: .*\[0, 10\] dB/km"),
    (dict(channel=dict(group_index=0.5)), r"channel\.group_index = 0\.5: .*\[1, 2\]"),
    (dict(channel=dict(misalignment=0.6)), r"misalignment = 0\.6: .*\[0, 0\.5\]"),
    (dict(channel=dict(polarisation_drift_rad_per_sqrt_s=-1.0)), r"polarisation_drift_rad_per_sqrt_s = -1\.0"),
    (dict(detectors=dict(efficiency=1.5)), r"detectors\.efficiency = 1\.5: .*\[0, 1\]"),
    (dict(detectors=dict(dark_count_per_gate=0.1)), r"detectors\.dark_count_per_gate = 0\.1: .*1/gate"),
    (dict(detectors=dict(dead_time_ns=-1.0)), r"detectors\.dead_time_ns = -1\.0: .*ns"),
    (dict(detectors=dict(afterpulse_probability=0.9)), r"detectors\.afterpulse_probability = 0\.9"),
    (dict(detectors=dict(efficiency=0.9, efficiency_mismatch=0.5)), r"detectors\.efficiency_mismatch = 0\.5: must be in \[0, 0\.222"),
    (dict(source=dict(mu_signal=20.0)), r"source\.mu_signal = 20\.0: .*photons/pulse"),
    (dict(source=dict(intensity_fluctuation_rel=0.7)), r"source\.intensity_fluctuation_rel = 0\.7"),
    (dict(gateware=dict(samples_per_clock=3)), r"S \(samples_per_clock\) = 3: must be one of 1, 2, 4, 8"),
    (dict(gateware=dict(samples_per_clock=2, slots_per_clock=4)), r"P \(slots_per_clock\) = 4: must divide S"),
    (dict(gateware=dict(clock_mhz=0.0)), r"clock_mhz = 0\.0: .*\[1, 1000\] MHz"),
    (dict(gateware=dict(pulse_width_samples=3)), r"pulse_width_samples = 3: must be an integer in \[1, 1\]"),
]


@pytest.mark.parametrize("overrides, message", CONFIG_CASES, ids=[m[:30] for _, m in CONFIG_CASES])
def test_bad_config_values_are_named(link, overrides, message):
    cfg = link(**overrides)                     # dataclasses.replace skips config.py's own checks
    with pytest.raises(ValueError, match=message):
        Channel(cfg, seed=1)


def test_bad_keyword_arguments_are_named(link):
    cfg = link()
    for kwargs, message in [(dict(S=16), r"S \(samples_per_clock\) = 16"), (dict(P=3), r"P \(slots_per_clock\) = 3"),
                            (dict(clock_offset_ppm=5000.0), r"clock_offset_ppm = 5000\.0: .*\[-1000, 1000\] ppm"),
                            (dict(eve="eve"), r"eve = 'eve': must be None"),
                            (dict(downlink=3), r"downlink = 3: must be None or a SatellitePass"),
                            (dict(p_z_bob=1.5), r"detectors\.p_z_bob = 1\.5"),
                            (dict(epoch_slot=-1), r"epoch_slot = -1: must be an integer in \[0, ")]:
        with pytest.raises(ValueError, match=message):
            Channel(cfg, seed=1, **kwargs)


def test_bad_codes_and_slot_order(link):
    cfg = link()
    ch = Channel(cfg, seed=1)
    with pytest.raises(ValueError, match=r"codes: every symbol must be in \[0, 15\]"):
        ch.propagate(np.array([0, 16]), 0)
    with pytest.raises(ValueError, match=r"codes: must be a 1-D array"):
        ch.propagate(np.zeros((2, 2), np.uint8), 0)
    with pytest.raises(ValueError, match=r"first_slot = -5: must be an integer in \[0, "):
        ch.propagate(np.zeros(4, np.uint8), -5)
    with pytest.raises(ValueError, match=r"first_slot \+ len\(codes\) = .*must be <= 2\^48"):
        ch.propagate(np.zeros(4, np.uint8), (1 << 48) - 2)
    ch.propagate(np.zeros(100, np.uint8), 1000)
    with pytest.raises(ValueError, match=r"first_slot = 1050: must be >= 1100"):
        ch.propagate(np.zeros(4, np.uint8), 1050)
    ch.propagate(np.zeros(4, np.uint8), 5000)              # gaps are allowed


def test_bad_attack_parameters():
    with pytest.raises(ValueError, match=r"eve\.fraction = 1\.5: must be a number in \[0, 1\]"):
        InterceptResend(1.5)
    with pytest.raises(ValueError, match=r"eve\.resend_mu = 0\.0: must be a number in \(0, 10\]"):
        InterceptResend(1.0, resend_mu=0.0)
    with pytest.raises(ValueError, match=r"eve\.block_single_fraction = -0\.1"):
        PhotonNumberSplitting(-0.1)
    with pytest.raises(ValueError, match=r"eve\.forward_transmittance = 0\.0: must be a number in \(0, 1\]"):
        PhotonNumberSplitting(1.0, 0.0)


def test_pns_cannot_preserve_the_gain_of_a_lossless_link(link):
    """With no loss to hide in, forwarding n - 1 photons of every pulse gives less than the
    honest gain (1 dB of connector loss is already enough room: see test_channel_attacks)."""
    with pytest.raises(ValueError, match=r"channel transmittance = 1: too high for a gain-preserving PNS"):
        pns_preserving_signal_gain(link(channel=dict(length_km=0.0, connector_loss_db=0.0)))


def test_bad_module_parameters():
    cases = [
        (lambda: SatellitePass(altitude_km=50.0), r"satellite\.altitude_km = 50\.0: .*\[160, 2000\] km"),
        (lambda: SatellitePass(max_elevation_deg=0.0), r"satellite\.max_elevation_deg = 0\.0: .*\(0, 90\] deg"),
        (lambda: SatellitePass(max_elevation_deg=40.0, min_elevation_deg=50.0),
         r"satellite\.min_elevation_deg = 50\.0: .*\[0, 40\] deg"),
        (lambda: SatellitePass(beam_divergence_urad=0.0), r"satellite\.beam_divergence_urad = 0\.0"),
        (lambda: SampleClock(0.0), r"sample_period_ps = 0\.0: .*\(0, 1e\+09\] ps"),
        (lambda: Fibre(length_km=float("nan")), r"channel\.length_km = nan"),
        (lambda: Source(mu_vacuum=0.5), r"source\.mu_vacuum = 0\.5: .*\[0, 0\.1\]"),
        (lambda: Detectors(timing_jitter_ps=-1.0), r"detectors\.timing_jitter_ps = -1\.0"),
        (lambda: PolarisationDrift(0.01, 11.0, np.random.default_rng()),
         r"polarisation_drift_rad_per_sqrt_s = 11\.0: .*\[0, 10\] rad/sqrt\(s\)"),
        (lambda: decode_codes([3, -1]), r"codes: every symbol must be in \[0, 15\]"),
        (lambda: random_codes(10, Source(), np.random.default_rng(), p_blank=2.0), r"p_blank = 2\.0"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            make()


def test_bad_expectation_parameters(link):
    cfg = link()
    with pytest.raises(ValueError, match=r"transmittance = 1\.5: .*\[0, 1\]"):
        expected_statistics(cfg, transmittance=1.5)
    with pytest.raises(ValueError, match=r"p_blank = -0\.1"):
        expected_statistics(cfg, p_blank=-0.1)
    with pytest.raises(ValueError, match=r"clock_mhz = 2000\.0"):
        expected_statistics(cfg, clock_mhz=2000.0)
