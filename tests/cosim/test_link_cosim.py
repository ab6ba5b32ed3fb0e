"""End to end: Alice and Bob gateware in one Verilated design, an ideal channel between them,
hardware sifting through both host links. Both sifted keys must be identical, entry by
entry (slot, bit, basis, intensity), and their length must match the basis-match fraction."""
import math

import pytest

from qkdlink.cosim.link import run_link_cosim
from qkdlink.gateware.alice import AliceParams
from qkdlink.gateware.alice_model import AliceSettings
from qkdlink.gateware.bob import BobParams
from qkdlink.gateware.bob_model import BobSettings
from qkdlink.gateware import protocol as proto

pytestmark = pytest.mark.verilator


@pytest.mark.parametrize("S, P, pz_q15", [(4, 4, 16384), (2, 1, 29491)])
def test_sifted_keys_identical_through_an_ideal_channel(S, P, pz_q15):
    alice = AliceParams(S, P, choice_depth_slots=65536, frame_log2=10)
    bob = BobParams(S, P, frame_log2=10)
    out = run_link_cosim(alice, bob, AliceSettings(seed=21, pz_q15=pz_q15), BobSettings(seed=22),
                         slots=1_000_000, log2_loss=8)
    alice_key, bob_key = out["alice_key"], out["bob_key"]
    assert len(alice_key) > 500
    assert alice_key == bob_key
    answers = [proto.unpack_answer_byte(a) for _, a in out["answers"]]   # (keep, intensity, status)
    ok = [a for a in answers if a[2] == 0 and a[1] != 3]
    # Bob's basis choice is passive 50/50, independent of Alice's: half the OK detections match.
    n, k = len(ok), sum(a[0] for a in ok)
    assert abs(k - n / 2) < 5 * math.sqrt(n / 4), (k, n)
    assert len(alice_key) == k
    # all detections were answered in time (Alice's choice memory never overran)
    assert all(a[2] == 0 for a in answers)
    # a query for an overwritten slot is answered LOST (never with stale data) and counted
    (slot, answer), = out["lost_probe"]
    assert proto.unpack_answer_byte(answer) == (0, 0, 1) and out["lost_probe_key"] == []
    assert out["alice_sift_regs"]["SNAP_SIFT_LOST_LO"] == 1
    # the counters at both ends agree with the keys
    alice_sifted = sum(v for name, v in out["alice_sift_regs"].items() if "SIFTED" in name and name.endswith("_LO"))
    assert alice_sifted == len(alice_key)
