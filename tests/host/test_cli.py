"""The qkdlink command line: help, config errors, exports."""
import subprocess
import sys

import pytest

from qkdlink.host.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "qkdlink.host.cli", *args], capture_output=True, text=True)


def test_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("cosim-tx", "cosim-link", "keyrate", "verilog", "config", "regmap"):
        assert cmd in out.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: qkdlink" in capsys.readouterr().out


def test_config_check_reports_file_field_value_range(tmp_path):
    bad = tmp_path / "link.yaml"
    bad.write_text("channel:\n  length_km: -3\n")
    out = run("config", "check", str(bad))
    assert out.returncode == 2
    assert f"{bad}: channel.length_km = -3: must be a number in [0, 5000] km" in out.stderr
    good = tmp_path / "good.yaml"
    good.write_text("channel:\n  length_km: 80\n")
    assert run("config", "check", str(good)).returncode == 0


def test_config_show_round_trips(tmp_path, capsys):
    assert main(["config", "show"]) == 0
    dumped = tmp_path / "d.yaml"
    dumped.write_text(capsys.readouterr().out)
    assert main(["config", "check", str(dumped)]) == 0


def test_cosim_tx_rejects_bad_config_before_building(tmp_path, capsys):
    bad = tmp_path / "link.yaml"
    bad.write_text("gateware:\n  samples_per_clock: 2\n  slots_per_clock: 4\n")
    assert main(["cosim-tx", str(bad), "--slots", "10"]) == 2
    assert "slots_per_clock = 4: must divide" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-5", "many"])
def test_bad_slot_counts_are_usage_errors(bad):
    out = run("cosim-tx", "--slots", bad)
    assert out.returncode == 2 and "--slots" in out.stderr


def test_regmap_prints_the_maps(capsys):
    assert main(["regmap", "--role", "alice"]) == 0
    text = capsys.readouterr().out
    assert "SNAP_DIGEST_SYMBOLS" in text and "`0x0011` | CMD | strobe" in text
    assert main(["regmap", "--role", "bob"]) == 0
    assert "SNAP_DIGEST_RECORDS" in capsys.readouterr().out


@pytest.mark.parametrize("role", ["alice", "bob", "link"])
def test_verilog_export_is_lint_clean(tmp_path, role):
    """`qkdlink verilog` writes Verilog that Verilator lints with -Wall minus listed waivers."""
    assert main(["verilog", "--role", role, "--out", str(tmp_path)]) == 0
    v = (tmp_path / f"{role}.v").read_text()
    assert f"module {role}(" in v
    waivers = (tmp_path / "LINT_WAIVERS.md").read_text()
    assert "UNUSEDSIGNAL" in waivers
