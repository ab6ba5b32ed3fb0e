"""Alice under cocotb + Verilator vs the bit-exact model, over >= 10^6 slots per configuration.

Python wakes once per batch (burst): each batch ends with a SNAPSHOT whose counters and two
running CRC-32 digests (symbols + sync bits, and every laser/sync/IM pin word) must equal
the model's. The newest 200 choice-memory entries and its window edges are checked too.
"""
import numpy as np
import pytest
from scipy.stats import chisquare

from qkdlink.cosim.alice import run_alice_cosim
from qkdlink.gateware.alice import AliceParams
from qkdlink.gateware.alice_model import AliceSettings
from qkdlink.hdl.symbols import quantise_probability, intensity_thresholds

pytestmark = pytest.mark.verilator

SLOTS = 1_000_000
BATCHES = 10


def _settings(seed, p_z=0.5, probs=(0.7, 0.2, 0.1), delay=0, width=1):
    t_sig, t_dec = intensity_thresholds(*probs)
    return AliceSettings(seed=seed, pz_q15=quantise_probability(p_z), t_signal_q15=t_sig, t_decoy_q15=t_dec,
                         pulse_delay_samples=delay, pulse_width_samples=width)


CASES = [
    # (S, P, choice depth, settings)
    (1, 1, 1024, _settings(1)),
    (2, 2, 4096, _settings(7, p_z=0.9, delay=2, width=1)),
    (4, 1, 256, _settings(5, probs=(0.5, 0.3, 0.2), delay=3, width=4)),
    (4, 4, 16384, _settings(0xDEADBEEFCAFEF00D)),
    (4, 4, 16384, _settings(2, p_z=0.25, probs=(0.6, 0.3, 0.1))),
    (8, 2, 2048, _settings(3, delay=5, width=4)),
    (8, 4, 8192, _settings(4, p_z=0.75, delay=8, width=2)),
]


def _bursts(P, slots=SLOTS, batches=BATCHES):
    clocks = -(-slots // P)
    # uneven batch lengths so that burst edges land on every lane/sync-frame phase
    rng = np.random.default_rng(P)
    cuts = np.sort(rng.choice(np.arange(1, clocks), batches - 1, replace=False))
    return list(np.diff(np.concatenate(([0], cuts, [clocks]))).astype(int))


@pytest.mark.parametrize("S, P, depth, settings", CASES,
                         ids=[f"S{c[0]}-P{c[1]}-seed{c[3].seed:x}" for c in CASES])
def test_gateware_equals_model_over_a_million_slots(S, P, depth, settings):
    params = AliceParams(S, P, choice_depth_slots=depth, frame_log2=10)
    report = run_alice_cosim(params, settings, _bursts(P))
    assert report["slots"] >= SLOTS
    assert report["model_agreement"], "\n".join(report["mismatches"][:20])
    assert len(report["snapshots"]) == BATCHES
    final = report["final"]
    assert final["SNAP_SLOT"] == report["slots"] and final["SNAP_BLANK"] == 0
    assert final["SNAP_RCT_FAILS"] == 0 and final["SNAP_APT_FAILS"] == 0
    assert report["choice_answers_checked"] >= 206
    # the host link saw no errors during the whole run
    rx_frames, *errors, tx_frames = report["link_counters"]
    assert errors == [0] * 7
    assert rx_frames == tx_frames + 1  # the counter read itself is not answered yet

    # Realised frequencies match the programmed (quantised) probabilities: chi-square.
    counts = np.array([[final[f"SNAP_SENT_{i}_{b}"] for b in "ZX"] for i in ("SIGNAL", "DECOY", "VACUUM")])
    n = counts.sum()
    pz = settings.pz_q15 / 2**15
    p_int = np.array([settings.t_signal_q15, settings.t_decoy_q15,
                      2**15 - settings.t_signal_q15 - settings.t_decoy_q15]) / 2**15
    expected = n * np.outer(p_int, [pz, 1 - pz])
    mask = expected.ravel() > 0
    assert counts.ravel()[~mask].sum() == 0
    assert chisquare(counts.ravel()[mask], expected.ravel()[mask]).pvalue > 1e-4
    bits = report["codes"] & 1
    assert chisquare(np.bincount(bits.ravel(), minlength=2)).pvalue > 1e-4
