"""Real bitstream builds through YoWASP (marker `bitstream`): one per role on the ECP5 board.

Reduced-but-real configuration for CI time: P = 1 slot per clock (S = 4 samples per clock
through the ODDRX2F/IDDRX2F gearing, as in the full build), small choice memory and record
FIFO, at a 100 MHz system clock (200 MHz ECLK), which leaves margin for placement noise. The
full-rate builds (P = 4, 156.25 MHz: both meet it; docs/boards.md) are in
benchmarks/boards_fmax.py. iCEBreaker (iCE40UP5K): both endpoints at the board defaults, and
the bring-up design on both pin maps.
"""
import json

import pytest

from qkdlink.boards.build import build_board
from qkdlink.host.config import default_link_config, link_config_from_dict

REDUCED = dict(slots_per_clock=1, choice_depth_slots=1024, record_rows=64, pending_depth=256, clock_mhz=100.0)
# ODDRX2F per output pin (4 lasers, 2 IM bits, sync) / IDDRX2F per input pin (4 detectors, sync)
GEARED_PINS = {"alice": 7, "bob": 5}


@pytest.mark.bitstream
@pytest.mark.parametrize("role", ["alice", "bob"])
def test_ecpix5_bitstream(role, tmp_path):
    entropy = "prng" if role == "alice" else "qrng"
    cfg = link_config_from_dict({"gateware": {"entropy_source": entropy}})
    report = build_board("ecpix5-85", role, tmp_path, cfg, overrides=REDUCED)
    assert report == json.loads((tmp_path / "report.json").read_text())
    bit = tmp_path / report["bitstream"]
    assert bit.stat().st_size > 100_000
    # contract 5: the PRNG build says so in its name and report
    assert report["insecure"] == (role == "alice")
    assert ("INSECURE_PRNG" in bit.name) == (role == "alice")
    sync = report["clocks"]["sync"]
    assert sync["constraint_mhz"] == pytest.approx(100.0, abs=0.1) and sync["met"] and report["timing_met"]
    assert report["eclk_mhz"] == pytest.approx(200.0)           # the gearing's edge clock
    assert report["utilization"]["IOLOGIC"]["used"] == GEARED_PINS[role]
    assert 0 < report["resources"]["LUT"]["used"] < report["resources"]["LUT"]["available"]
    assert report["gateware"]["slots_per_clock"] == 1 and report["gateware"]["samples_per_clock"] == 4


def test_qrng_alice_has_no_prng():
    """entropy_source: qrng builds Alice without the PRNG (no tools run)."""
    from qkdlink.boards.build import gateware_params
    from qkdlink.boards.platforms import get_board
    cfg = link_config_from_dict({"gateware": {"entropy_source": "qrng"}})
    params, clock_mhz = gateware_params(get_board("ecpix5-85"), "alice", cfg.gateware)
    assert not params.has_prng and params.has_qrng and clock_mhz == 156.25
    params, _ = gateware_params(get_board("ecpix5-85"), "alice", default_link_config().gateware)
    assert params.has_prng and params.samples_per_clock == 4
    params, clock_mhz = gateware_params(get_board("icebreaker"), "alice", cfg.gateware)
    assert not params.has_prng and params.samples_per_clock == 2 and clock_mhz == 24.0


@pytest.mark.bitstream
@pytest.mark.parametrize("role", ["alice", "bob"])
def test_icebreaker_bitstream(role, tmp_path):
    """The iCE40 endpoints at the board's defaults (S 2, P 1, 24 MHz, no digests; Alice with
    the QRNG input only, Bob without histograms): fit the UP5K, meet timing, secure."""
    cfg = link_config_from_dict({"gateware": {"entropy_source": "qrng"}})
    report = build_board("icebreaker", role, tmp_path, cfg)
    assert report == json.loads((tmp_path / "report.json").read_text())
    assert report["bitstream"] == f"{role}_icebreaker.bin" and not report["insecure"]
    assert (tmp_path / report["bitstream"]).stat().st_size > 50_000
    sync = report["clocks"]["sync"]
    assert sync["constraint_mhz"] == pytest.approx(24.0, abs=0.01) and sync["met"] and report["timing_met"]
    lut = report["resources"]["LUT"]
    assert 4000 < lut["used"] <= lut["available"] == 5280
    # the netlist's LUT4s and flip-flops (Yosys) fit the logic cells they were packed into
    assert 2000 < report["resources"]["FF"]["used"] <= lut["used"] and report["resources"]["LUT4"]["used"] <= lut["used"]
    assert report["resources"]["BRAM"]["used"] <= 30 and report["resources"]["PLL"]["used"] == 1
    # QKD pins (alice 7 out + 2 QRNG in, bob 5 in) + 2 UART + oscillator pad (+ LED for bob)
    assert report["resources"]["IO"]["used"] == {"alice": 12, "bob": 9}[role]
    gw = report["gateware"]
    assert (gw["samples_per_clock"], gw["slots_per_clock"], gw["has_digests"]) == (2, 1, False)
    if role == "alice":
        assert not gw["has_prng"] and gw["has_qrng"]
    else:
        assert not gw["has_histogram"]


def test_icebreaker_alice_refuses_the_prng(tmp_path):
    """No room for the simulation PRNG on the UP5K: a clear error before any tool runs."""
    with pytest.raises(ValueError, match="does not fit the iCE40UP5K.*--entropy qrng"):
        build_board("icebreaker", "alice", tmp_path, default_link_config())
    assert not any(tmp_path.iterdir())


@pytest.mark.bitstream
@pytest.mark.parametrize("role", ["alice", "bob"])
def test_icebreaker_bringup_bitstream(role, tmp_path):
    """The bring-up design on both pin maps (a first test of a wired board): the PLL from the
    12 MHz pad, SB_IO DDR gearing on every QKD pin, UART echo."""
    report = build_board("icebreaker", role, tmp_path, default_link_config(), bringup=True)
    assert (tmp_path / report["bitstream"]).stat().st_size > 50_000
    assert report["bitstream"] == f"{role}_icebreaker_BRINGUP.bin" and not report["insecure"]
    sync = report["clocks"]["sync"]
    assert sync["constraint_mhz"] == pytest.approx(24.0, abs=0.01) and sync["met"] and report["timing_met"]
    # QKD pins (alice 7 out + 2 QRNG in, bob 5 in) + 2 UART + oscillator pad (+ LED for bob)
    assert report["resources"]["IO"]["used"] == {"alice": 12, "bob": 9}[role]
    assert report["resources"]["PLL"]["used"] == 1
