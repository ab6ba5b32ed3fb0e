"""A third opinion on short runs: Alice under amaranth.sim agrees with the model too."""
import pytest

from qkdlink.cosim.alice_pysim import run_alice_pysim
from qkdlink.gateware.alice import AliceParams
from qkdlink.gateware.alice_model import AliceSettings, alice_model


@pytest.mark.parametrize("S, P, delay, width, digests", [(2, 2, 1, 1, True), (4, 1, 4, 3, True), (2, 1, 0, 2, False)])
def test_amaranth_sim_equals_model(S, P, delay, width, digests):
    """(2, 1, no digests) is the iCEBreaker build's geometry: the SNAP_DIGEST_* read 0."""
    params = AliceParams(S, P, choice_depth_slots=64, frame_log2=7, has_digests=digests)
    settings = AliceSettings(seed=11, pulse_delay_samples=delay, pulse_width_samples=width)
    bursts = [150, 97, 201]
    got = run_alice_pysim(params, settings, bursts)
    assert got["snapshots"] == alice_model(params, settings, bursts).snapshots
    assert (got["snapshots"][-1]["SNAP_DIGEST_PINS"] != 0) == digests
