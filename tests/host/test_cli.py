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
    for cmd in ("cosim-tx", "cosim-link", "sim", "plot-distance", "keyrate", "distill", "device", "serve-sim",
                "build", "verilog", "config", "regmap"):
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


# -- qkdlink sim: checks before anything is built, and the report ---------------------------

def run_isolated(tmp_path, *args):
    """The CLI in a subprocess with its own (empty) build cache."""
    import os
    env = {**os.environ, "QKDLINK_CACHE": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "qkdlink.host.cli", *args], capture_output=True, text=True,
                          env=env)


@pytest.mark.parametrize("yaml_text, message", [
    ("channel:\n  length_km: -3\n", "channel.length_km = -3: must be a number in [0, 5000] km"),
    ("source:\n  p_signal: 0.5\n", "source.p_signal + p_decoy + p_vacuum = 0.8: must sum to 1"),
    ("gateware:\n  samples_per_clock: 2\n  slots_per_clock: 4\n",
     "gateware.slots_per_clock = 4: must divide gateware.samples_per_clock = 2"),
    ("detectors:\n  dark_count_per_gate: 0.5\n", "detectors.dark_count_per_gate = 0.5"),
    ("source:\n  mu_signal: 0.05\n", "source.mu_decoy = 0.1: must be below source.mu_signal = 0.05"),
])
def test_sim_rejects_bad_config_before_building(tmp_path, yaml_text, message):
    bad = tmp_path / "link.yaml"
    bad.write_text(yaml_text)
    out = run_isolated(tmp_path, "sim", str(bad), "--slots", "1000", "--json", str(tmp_path / "r.json"))
    assert out.returncode == 2, out.stderr
    assert f"qkdlink: config error: {bad}: {message}" in out.stderr
    assert not (tmp_path / "cache" / "verilator").exists() and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--eve", "man-in-the-middle"], "--eve 'man-in-the-middle': must be intercept-resend[:FRACTION], pns or "
                                     "beam-splitting"),
    (["--eve", "intercept-resend:1.5"], "--eve intercept-resend:FRACTION '1.5': must be in [0, 1]"),
    (["--eve", "beam-splitting:2"], "--eve 'beam-splitting:2': must be"),
    (["--clock-offset-ppm", "2000"], "--clock-offset-ppm '2000': must be in [-1000, 1000] ppm"),
    (["--clock-offset-ppm", "fast"], "--clock-offset-ppm 'fast': not a number"),
    (["--pass-time-s", "10"], "--pass-time-s: only with --satellite"),
    (["--satellite", "--pass-time-s", "1000"], "--pass-time-s '1000': must be in [-221.318, 221.318] s"),
    (["--waves", "--slots", "1000000"], "--waves with --slots 1000000: at most 20,000 slots"),
])
def test_sim_rejects_bad_channel_options_before_building(tmp_path, args, message):
    out = run_isolated(tmp_path, "sim", *args)
    assert out.returncode == 2, out.stderr
    assert f"qkdlink: {message}" in out.stderr
    assert not (tmp_path / "cache" / "verilator").exists()


def test_sim_rejects_pns_where_it_cannot_hide(tmp_path):
    """At 0 km without loss no gain-preserving PNS attack exists: said before anything is built."""
    cfg = tmp_path / "short.yaml"
    cfg.write_text("channel:\n  length_km: 0\n  connector_loss_db: 0\n")
    out = run_isolated(tmp_path, "sim", str(cfg), "--eve", "pns")
    assert out.returncode == 2
    assert "qkdlink: --eve pns: channel transmittance = " in out.stderr and "too high" in out.stderr
    assert not (tmp_path / "cache" / "verilator").exists()


@pytest.mark.verilator
def test_sim_report_keys_and_channel_options(tmp_path, capsys):
    """`qkdlink sim` with a satellite pass, partial intercept-resend and a clock offset writes
    the report (every field the issue names, the options recorded) and both sifted keys."""
    import json
    import numpy as np
    report = tmp_path / "run.json"
    rc = main(["sim", "--slots", "300000", "--seed", "9", "--json", str(report), "--satellite",
               "--eve", "intercept-resend:0.5", "--clock-offset-ppm", "0.2"])
    captured = capsys.readouterr()
    assert rc == 0, captured
    assert "steps" in captured.err                       # the progress bar
    assert "unconfirmed" in captured.out and "eve: attack InterceptResend" in captured.out
    r = json.loads(report.read_text())
    assert r["slots"] == 300000 and r["wall_s"] > 0 and r["slots_per_s"] > 0 and r["model_agreement"] is True
    ch = r["channel"]
    assert ch["eve"] == {"attack": "InterceptResend", "fraction": 0.5, "resend_mu": None}
    assert ch["clock_offset_ppm"] == 0.2 and ch["pass_time_s"] == 0.0
    assert ch["satellite"]["altitude_km"] == 500.0 and "unconfirmed" in ch["satellite"]
    assert r["transmittance"] == pytest.approx(10 ** (-ch["satellite"]["loss_db"] / 10))
    for name in ("signal", "decoy", "vacuum"):
        c = r["classes"][name]
        for key in ("sent", "detected", "sifted", "errors", "gain", "qber", "expected_gain", "expected_qber"):
            assert key in c, (name, key)
    s = r["classes"]["signal"]
    # half the pulses resent as single photons: they are ~44 % of the signal detections, QBER 25 %
    assert s["detected"] > 60 and 0.09 < s["expected_qber"] < 0.14
    assert abs(s["gain"] - s["expected_gain"]) <= 3 * s["sigma_gain"]
    alice, bob = np.load(r["keys"]["alice"]), np.load(r["keys"]["bob"])
    assert alice.shape == bob.shape == (r["sifted"], 2) and (alice[:, 0] == bob[:, 0]).all()
    assert r["sifted"] == sum(c["sifted"] for c in r["classes"].values())


@pytest.mark.verilator
def test_plot_distance_writes_png_and_json_matching_run_full_link(tmp_path):
    """`qkdlink plot-distance` on two distances: the PNG, and JSON data equal to what
    run_full_link reports for the same link, slots and seed."""
    import json
    from qkdlink.cosim.fulllink import run_full_link
    from qkdlink.host.config import link_config_from_dict
    png = tmp_path / "d.png"
    assert main(["plot-distance", "--distance-km", "40:80:40", "--slots", "100000", "--seed", "3",
                 "--out", str(png), "--quiet"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    data = json.loads(png.with_suffix(".json").read_text())
    assert [p["distance_km"] for p in data["points"]] == [40.0, 80.0]
    again = run_full_link(link_config_from_dict({"channel": {"length_km": 80.0}}), slots=100_000, seed=3)
    p = data["points"][1]
    assert p["classes"] == json.loads(json.dumps(again["classes"]))
    assert p["sifted"] == again["sifted"] and p["transmittance"] == again["transmittance"]
    assert p["model_agreement"] and data["slots"] == 100_000


@pytest.mark.parametrize("args, message", [
    (["--distance-km", "0:9000:1000"], "--distance-km: '0:9000:1000': START and STOP must be in [0, 5000] km"),
    (["--distance-km", "0:400:5"], "--distance-km '0:400:5': 81 distances, at most 40"),
    (["--out", "p.pdf"], "--out 'p.pdf': must end in .png"),
    (["--eve", "pns:1"], "--eve 'pns:1': must be"),
])
def test_plot_distance_rejects_bad_arguments_before_building(tmp_path, args, message):
    out = run_isolated(tmp_path, "plot-distance", *args)
    assert out.returncode == 2, out.stderr
    assert f"qkdlink: {message}" in out.stderr
    assert not (tmp_path / "cache" / "verilator").exists()
