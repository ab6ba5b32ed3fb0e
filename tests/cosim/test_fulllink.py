"""Full link: Alice and Bob gateware with the physical channel model between them.

Both gateware ends agree with their models bit for bit (Alice's symbol and pin digests prove
the channel was fed the gateware's own emission; Bob's record digest proves the receiver
processed the channel's output as specified), the sifted keys cover the same slots, and the
measured gain and QBER per intensity class agree with the analytic expectation."""
import pytest

from qkdlink.cosim.fulllink import run_full_link
from qkdlink.host.config import link_config_from_dict

pytestmark = pytest.mark.verilator


def test_full_link_matches_models_and_theory():
    # 50 km keeps the detection rate within what the 1 byte/clock host links carry with sifting
    cfg = link_config_from_dict({"channel": {"length_km": 50.0}})
    r = run_full_link(cfg, slots=1_000_000, seed=5)
    assert r["model_agreement"], r["mismatches"]
    assert r["key_slots_identical"] and r["sifted"] > 500
    for name in ("signal", "decoy"):
        c = r["classes"][name]
        assert abs(c["gain"] - c["expected_gain"]) < 3 * c["sigma_gain"] + 1e-12, (name, c)
    s = r["classes"]["signal"]
    assert abs(s["qber"] - s["expected_qber"]) < 3 * s["sigma_qber"], s


def test_full_link_waves_dump_a_vcd(tmp_path):
    """``waves=True``: a traced build, and a VCD of a short run with both ends' signals."""
    cfg = link_config_from_dict({"channel": {"length_km": 10.0}})
    r = run_full_link(cfg, slots=2000, seed=3, work_dir=tmp_path, waves=True)
    assert r["model_agreement"], r["mismatches"]
    vcd = tmp_path / "dump.vcd"
    assert r["waves_file"] == str(vcd)
    text = vcd.read_text()
    header, _, changes = text.partition("$enddefinitions")
    assert "bob_running" in header and " clk " in header
    assert changes.count("\n#") > 1000          # value changes at many time steps


def test_full_link_waves_needs_a_work_dir():
    cfg = link_config_from_dict({})
    with pytest.raises(ValueError, match="waves: a work_dir"):
        run_full_link(cfg, slots=100, waves=True)
