"""Key rate theory (host/theory.py) and the ``keyrate`` command (host/keyrate_cli.py).

Published figure reproduced: the GYS parameter set of Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005)
(Table I: alpha = 0.21 dB/km, e_detector = 3.3 %, Y0 = 1.7e-6, eta_Bob = 4.5 %, f = 1.22) gives
a maximum distance of 142.05 km with infinitely many decoys and 140.55 km with the vacuum +
weak decoy protocol at mu = 0.48, nu = 0.05 (Ma 2005, Sec. 3 / Fig. 3; the figures as quoted by
independent reproductions of that paper, not re-read from the original PDF).
"""
import argparse
import json
import math

import numpy as np
import pytest

from qkdlink.host import theory as T
from qkdlink.host.config import ConfigError, default_link_config
from qkdlink.host.keyrate_cli import add_parser, parse_distance_range

CFG = default_link_config()
LINK = T.link_from_config(CFG)
SETTINGS = T.settings_from_config(CFG)
GYS_SETTINGS = T.ProtocolSettings(mu_signal=0.48, mu_decoy=0.05, mu_vacuum=0.0)
# GYS's 3.3 % misalignment leaves no finite key in a 1e6-bit block: properties use 1e8 bits, nu = 0.1.
GYS_BLOCK = GYS_SETTINGS.replace(mu_decoy=0.1, n_key_sifted=1e8)
ASYMPTOTIC = ("gllp-decoy", "vacuum-weak-decoy", "no-decoy")


# ------------------------------------------------------------------ basics and observables

def test_binary_entropy():
    assert T.binary_entropy(0.0) == 0.0 and T.binary_entropy(1.0) == 0.0
    assert T.binary_entropy(0.5) == pytest.approx(1.0)
    assert T.binary_entropy(0.11) == pytest.approx(0.49992, abs=1e-5)
    h = T.binary_entropy(np.array([0.01, 0.1, 0.9]))
    assert h.shape == (3,) and h[1] == pytest.approx(h[2])


def test_transmittance_in_db_and_vectorised():
    eta = T.transmittance(np.array([0.0, 50.0]), 0.2, 1.0, 0.1)
    assert eta == pytest.approx([10 ** -0.1 * 0.1, 10 ** -1.1 * 0.1])
    assert T.transmittance(100.0, 0.21, 0.0, 0.045) == pytest.approx(0.045 * 10 ** -2.1)
    assert LINK.eta(65.0) == pytest.approx(T.transmittance(65.0, 0.2, 1.0, 0.1))


def test_background_yield_counts_gated_detectors():
    assert T.background_yield(6e-7, 4) == pytest.approx(2.4e-6, rel=1e-6)
    assert T.background_yield(8.5e-7, 2) == pytest.approx(1.7e-6, rel=1e-6)   # GYS: Y0 = 2 x 8.5e-7
    assert LINK.y0 == pytest.approx(T.background_yield(CFG.detectors.dark_count_per_gate, 4))


def test_gain_and_error_are_poisson_sums_of_photon_yields():
    """Q_mu = sum_n P_n Y_n and E_mu Q_mu = sum_n P_n e_n Y_n (Ma 2005 Eqs. (6)-(11))."""
    mu, eta, y0, ed = 0.48, 0.013, 1.7e-6, 0.033
    n = np.arange(60)
    pn = np.exp(-mu) * mu ** n / np.array([math.factorial(int(k)) for k in n], float)
    yn = np.array([T.photon_yield(int(k), eta, y0) for k in n])
    assert T.gain(mu, eta, y0) == pytest.approx(np.sum(pn * yn), rel=1e-12)
    en_yn = 0.5 * y0 + ed * (yn - y0)
    assert T.error_rate(mu, eta, y0, ed) * T.gain(mu, eta, y0) == pytest.approx(np.sum(pn * en_yn), rel=1e-12)
    assert T.y1(eta, y0) == pytest.approx(yn[1])
    assert T.e1(eta, y0, ed) == pytest.approx(en_yn[1] / yn[1])
    assert T.gain(mu, 0.0, y0) == pytest.approx(y0) and T.error_rate(mu, 0.0, y0, ed) == pytest.approx(0.5)


def test_plob():
    assert T.plob_bound(0.5) == pytest.approx(1.0)
    assert T.plob_bound(np.array([0.0, 1e-6]))[1] == pytest.approx(1e-6 / math.log(2), rel=1e-5)


# ------------------------------------------------------------------ published figures (Ma 2005, GYS)

def test_gys_max_distance_vacuum_weak_decoy_ma2005():
    """Ma 2005, GYS: vacuum + weak decoy (mu = 0.48, nu = 0.05) reaches 140.55 km."""
    d = T.max_distance_km("vacuum-weak-decoy", T.GYS, GYS_SETTINGS)
    assert d == pytest.approx(140.55, abs=0.5)


def test_gys_max_distance_infinite_decoy_ma2005():
    """Ma 2005, GYS: infinitely many decoys (mu = 0.48) reach 142.05 km."""
    d = T.max_distance_km("gllp-decoy", T.GYS, GYS_SETTINGS)
    assert d == pytest.approx(142.05, abs=0.5)


def test_gys_optimal_mu_near_048():
    """Ma 2005: the optimal signal intensity for GYS at f = 1.22 is mu ~ 0.48."""
    res = T.optimise("gllp-decoy", T.GYS, GYS_SETTINGS, 50.0)
    assert 0.45 < res["params"]["mu_signal"] < 0.52
    assert res["rate_per_pulse"] >= T.key_rate("gllp-decoy", T.GYS, GYS_SETTINGS, 50.0)


def test_decoy_bounds_bracket_the_true_single_photon_values_and_converge():
    eta = T.GYS.eta(np.linspace(0.0, 140.0, 15))
    y0, ed, mu = T.GYS.y0, T.GYS.e_detector, 0.48
    q = lambda m: T.gain(m, eta, y0)                       # noqa: E731
    eq = lambda m: T.gain(m, eta, y0) * T.error_rate(m, eta, y0, ed)   # noqa: E731
    gaps = []
    for nu in (0.2, 0.1, 0.05, 0.01):
        y0l, y1l, e1u = T.decoy_bounds(mu, nu, 0.0, q(mu), q(nu), q(0.0), eq(nu), eq(0.0))
        assert np.all(y1l <= T.y1(eta, y0) * (1 + 1e-12)) and np.all(e1u >= T.e1(eta, y0, ed) * (1 - 1e-12))
        assert y0l == pytest.approx(y0)
        gaps.append(np.max(1 - y1l / T.y1(eta, y0)))
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 0.005   # nu -> 0: infinite-decoy limit


# ------------------------------------------------------------------ finite key (Lim 2014)

def test_finite_key_approaches_the_asymptotic_rate():
    eta = LINK.eta(50.0)
    args = (eta, LINK.y0, LINK.e_detector, (0.5, 0.1, 0.0), (0.7, 0.2, 0.1), 0.5)
    rates = [T.rate_finite_lim2014(*args, n_pulses=n) for n in 10.0 ** np.arange(8, 15)]
    limit = T.rate_finite_lim2014(*args, n_pulses=math.inf)
    assert rates[0] == 0.0                                   # 1e8 pulses: too few at 50 km
    assert np.all(np.diff(rates) > 0) and rates[-1] < limit
    assert rates[-1] / limit > 0.99                          # 1e14 pulses
    assert T.rate_finite_lim2014(*args, n_pulses=1e5) == 0.0


def test_finite_key_limit_is_the_vacuum_weak_decoy_rate():
    """N -> inf: Lim's bounds become Ma 2005's vacuum + weak bounds (mu3 = 0). With the decoys a small
    fraction of the pulses, Lim's key (all intensities, Z basis only) -> p_signal x Ma's rate at q = p_z^2."""
    eta = LINK.eta(np.array([10.0, 50.0, 100.0]))
    p = (0.98, 0.01, 0.01)
    lim = T.lim2014_bounds(eta, LINK.y0, LINK.e_detector, (0.5, 0.1, 0.0), p, 0.5, n_pulses=math.inf)
    q = lambda m: T.gain(m, eta, LINK.y0)                                  # noqa: E731
    eq = lambda m: T.gain(m, eta, LINK.y0) * T.error_rate(m, eta, LINK.y0, LINK.e_detector)  # noqa: E731
    _, _, e1u = T.decoy_bounds(0.5, 0.1, 0.0, q(0.5), q(0.1), q(0.0), eq(0.1), eq(0.0))
    assert lim["phase_error"] == pytest.approx(e1u, rel=1e-9)
    ma = T.rate_vacuum_weak_decoy(eta, LINK.y0, LINK.e_detector, 0.5, 0.1, sifting=0.25, include_vacuum=True)
    assert lim["rate_per_pulse"] / (0.98 * ma) == pytest.approx(1.0, abs=0.01)
    big = T.rate_finite_lim2014(eta, LINK.y0, LINK.e_detector, (0.5, 0.1, 0.0), p, 0.5, n_pulses=1e15)
    assert np.all(big / (0.98 * ma) > 0.95)


def test_finite_key_bounds_are_valid_for_random_settings():
    """s_Z,1 and s_Z,0 never exceed the expected single-photon/vacuum counts; phi >= e1 (seeded)."""
    rng = np.random.default_rng(2014)
    for _ in range(200):
        L = rng.uniform(0, 150)
        mu1 = rng.uniform(0.2, 1.0)
        mu3 = rng.choice([0.0, rng.uniform(0, 0.02)])
        mu2 = rng.uniform(mu3 + 0.01, mu1 - mu3 - 0.01)
        ps = rng.dirichlet([3, 2, 1]) * 0.97 + 0.01
        ps /= ps.sum()
        pz = rng.uniform(0.3, 0.95)
        N = 10 ** rng.uniform(8, 14)
        eta = LINK.eta(L)
        b = T.lim2014_bounds(eta, LINK.y0, LINK.e_detector, (mu1, mu2, mu3), tuple(ps), pz, n_pulses=N)
        mus = np.array([mu1, mu2, mu3])
        true_s1 = N * pz ** 2 * np.sum(ps * mus * np.exp(-mus)) * T.y1(eta, LINK.y0)
        true_s0 = N * pz ** 2 * np.sum(ps * np.exp(-mus)) * LINK.y0
        assert b["s_key_1"] <= true_s1 and b["s_key_0"] <= true_s0 * (1 + 1e-9)
        assert b["phase_error"] >= T.e1(eta, LINK.y0, LINK.e_detector)


def test_finite_key_block_from_sifted_bits():
    b = T.lim2014_bounds(LINK.eta(65.0), LINK.y0, LINK.e_detector, n_key_sifted=1e6)
    assert b["n_key"] == pytest.approx(1e6)
    assert b["n_pulses"] > 1e8


# ------------------------------------------------------------------ properties over distance

def _all_rates(link, settings, d):
    out = {m: T.key_rate(m, link, settings, d) for m in ("gllp-decoy", "vacuum-weak-decoy", "finite-lim2014")}
    out["no-decoy"] = np.array([T.optimise("no-decoy", link, settings, float(x))["rate_per_pulse"] for x in d])
    return out


@pytest.mark.parametrize("link,settings", [(LINK, SETTINGS), (T.GYS, GYS_BLOCK)], ids=["config", "gys"])
def test_plob_is_never_exceeded(link, settings):
    d = np.arange(0.0, 301.0, 10.0)
    plob = T.plob_bound(link.eta(d))
    for method, r in _all_rates(link, settings, d).items():
        assert np.all(r <= plob), method
    for x in (0.0, 100.0, 200.0):                   # optimised settings too
        for method in ("gllp-decoy", "vacuum-weak-decoy", "finite-lim2014"):
            assert T.optimise(method, link, settings, x)["rate_per_pulse"] <= T.plob_bound(link.eta(x))


@pytest.mark.parametrize("link,settings", [(LINK, SETTINGS), (T.GYS, GYS_BLOCK)], ids=["config", "gys"])
def test_rates_fall_monotonically_with_distance(link, settings):
    d = np.arange(0.0, 301.0, 5.0)
    for method, r in _all_rates(link, settings, d).items():
        assert r[0] > 0, method
        assert np.all(np.diff(r) <= 1e-12 * r[0]), method
        assert r[-1] == 0.0, method
    plob = T.key_rate("plob", link, settings, d)
    assert np.all(np.diff(plob) < 0)


def test_max_distance_is_the_root_of_the_rate():
    for method in ("gllp-decoy", "vacuum-weak-decoy", "finite-lim2014"):
        d = T.max_distance_km(method, LINK, SETTINGS)
        assert T.key_rate(method, LINK, SETTINGS, d - 0.1) > 0, method
        assert T.key_rate(method, LINK, SETTINGS, d + 0.1) == 0, method
    assert T.max_distance_km("plob", LINK, SETTINGS) == math.inf
    assert T.max_distance_km("no-decoy", LINK, SETTINGS) == 0.0      # mu = 0.5 is far too bright without decoys


@pytest.mark.parametrize("link,settings", [(LINK, SETTINGS), (T.GYS, GYS_BLOCK)], ids=["config", "gys"])
def test_no_decoy_reaches_less_than_half_the_decoy_distance(link, settings):
    no_decoy = T.max_distance_km("no-decoy", link, settings, optimise=True)
    decoy = T.max_distance_km("vacuum-weak-decoy", link, settings)
    assert 0 < no_decoy < 0.5 * decoy
    assert T.optimise("no-decoy", link, settings, 10.0)["params"]["mu_signal"] < 5 * link.eta(10.0)


def test_optimised_finite_key_beats_the_config_and_respects_constraints():
    res = T.optimise("finite-lim2014", LINK, SETTINGS, 50.0)
    s = res["settings"]
    assert res["rate_per_pulse"] > T.key_rate("finite-lim2014", LINK, SETTINGS, 50.0)
    assert s.mu_signal > s.mu_decoy + s.mu_vacuum and s.mu_decoy > s.mu_vacuum
    assert s.p_signal + s.p_decoy + s.p_vacuum == pytest.approx(1.0)
    assert 0.5 <= s.p_z_basis <= 0.98


def test_keyrate_table_uses_the_config():
    rows = T.keyrate_table(CFG, "finite-lim2014", [0.0, 65.0])
    assert [r["distance_km"] for r in rows] == [0.0, 65.0]
    r = rows[1]
    assert r["eta"] == pytest.approx(LINK.eta(65.0))
    assert r["loss_db"] == pytest.approx(14.0)
    assert r["rate_bps"] == pytest.approx(r["rate_per_pulse"] * 625e6)
    assert r["rate_per_pulse"] == pytest.approx(T.key_rate("finite-lim2014", LINK, SETTINGS, 65.0))
    assert r["block_time_s"] == pytest.approx(r["n_pulses"] / 625e6)
    opt = T.keyrate_table(CFG, "vacuum-weak-decoy", [65.0], optimise=True)[0]
    assert opt["rate_per_pulse"] >= T.key_rate("vacuum-weak-decoy", LINK, SETTINGS, 65.0)


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize("call,message", [
    (lambda: T.gain(-1.0, 0.1, 1e-6), "mu = -1.0: must be in [0, 10]"),
    (lambda: T.gain(0.5, 1.5, 1e-6), "eta = 1.5: must be in [0, 1]"),
    (lambda: T.binary_entropy(1.5), "p = 1.5: must be in [0, 1]"),
    (lambda: T.transmittance(-3.0, 0.2), "length_km = -3.0: must be in [0, 5000] km"),
    (lambda: T.error_rate(0.5, 0.1, 1e-6, 0.7), "e_detector = 0.7: must be in [0, 0.5]"),
    (lambda: T.rate_vacuum_weak_decoy(0.01, 1e-6, 0.01, 0.5, 0.6), "mu_decoy = 0.6: must be in (0, 0.5)"),
    (lambda: T.rate_gllp_infinite_decoy(0.01, 1e-6, 0.01, 0.5, f_ec=0.9), "f_ec = 0.9: must be in [1, 3]"),
    (lambda: T.rate_finite_lim2014(0.01, 1e-6, 0.01, (0.5, 0.4, 0.2), n_pulses=1e10), "mu_vacuum = 0.2"),
    (lambda: T.rate_finite_lim2014(0.01, 1e-6, 0.01, (0.5, 0.45, 0.1), n_pulses=1e10), "mu_signal = 0.5"),
    (lambda: T.rate_finite_lim2014(0.01, 1e-6, 0.01, p=(0.5, 0.2, 0.2), n_pulses=1e10), "must sum to 1"),
    (lambda: T.rate_finite_lim2014(0.01, 1e-6, 0.01, n_pulses=1e10, eps_sec=0.0), "eps_sec = 0.0: must be in (0, 1)"),
    (lambda: T.rate_finite_lim2014(0.01, 1e-6, 0.01, n_pulses=-1.0), "n_pulses = -1.0"),
    (lambda: T.rate_finite_lim2014(0.01, 1e-6, 0.01), "exactly one of n_pulses"),
    (lambda: T.key_rate("bb85", LINK, SETTINGS, 10.0), "method = 'bb85': must be one of"),
    (lambda: T.optimise("gllp-decoy", LINK, SETTINGS, -1.0), "distance_km = -1.0"),
    (lambda: T.optimise("gllp-decoy", LINK, SETTINGS, 1.0, bounds={"mu": (0, 1)}), "unknown parameter 'mu'"),
    (lambda: T.background_yield(1e-6, 3), "n_detectors = 3"),
    (lambda: T.LinkModel(detector_efficiency=0.0), "detector_efficiency = 0.0: must be in (0, 1]"),
])
def test_inputs_are_validated(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert message in str(e.value)


# ------------------------------------------------------------------ command line

def _run(argv, capsys):
    parser = argparse.ArgumentParser(prog="qkdlink")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr()


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    out_json = tmp_path / "rates.json"
    code, out = _run(["keyrate", "--method", "vacuum-weak-decoy", "--distance-km", "0:100:50",
                      "--json", str(out_json)], capsys)
    assert code == 0
    lines = out.out.splitlines()
    assert "Ma, Qi, Zhao, Lo" in lines[0]
    assert "PLOB/pulse" in lines[2] and lines[3].split()[0] == "0.0" and lines[5].split()[0] == "100.0"
    dmax = T.max_distance_km("vacuum-weak-decoy", LINK, SETTINGS)
    assert f"max distance: {dmax:.2f} km" in out.out
    data = json.loads(out_json.read_text())
    assert [r["distance_km"] for r in data["rates"]] == [0.0, 50.0, 100.0]
    assert data["max_distance_km"] == pytest.approx(dmax)
    assert data["rates"][1]["rate_bps"] == pytest.approx(T.key_rate("vacuum-weak-decoy", LINK, SETTINGS, 50.0) * 625e6)


def test_cli_optimise_and_config_file(tmp_path, capsys):
    cfg = tmp_path / "link.yaml"
    cfg.write_text("detectors:\n  dark_count_per_gate: 1.0e-6\n")
    code, out = _run(["keyrate", str(cfg), "--method", "no-decoy", "--distance-km", "10", "--optimise",
                      "--detectors", "2", "--json", str(tmp_path / "o.json")], capsys)
    assert code == 0 and "mu_signal" in out.out and "Y0 2e-06" in out.out
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["n_detectors"] == 2 and len(data["rates"]) == 1 and data["rates"][0]["rate_per_pulse"] > 0
    assert 0 < data["max_distance_km"] < 100


def test_cli_plob_has_no_max_distance(tmp_path, capsys):
    code, out = _run(["keyrate", "--method", "plob", "--distance-km", "0:10:10", "--json", str(tmp_path / "p.json")],
                     capsys)
    data = json.loads((tmp_path / "p.json").read_text())
    assert code == 0 and "unbounded" in out.out
    assert data["max_distance_km"] is None and data["max_distance_unbounded"] is True


@pytest.mark.parametrize("bad,reason", [
    ("10:5:1", "STOP = 5 km is below START = 10 km"),
    ("0:100:0", "STEP = 0 km must be positive"),
    ("0:100", "has 2 fields"),
    ("a:b:c", "is not a distance range"),
    ("-5:10:1", "must be in [0, 5000] km"),
    ("0:5000:0.01", "at most 10,001"),
])
def test_cli_rejects_bad_ranges(bad, reason, capsys):
    with pytest.raises(SystemExit) as e:
        _run(["keyrate", f"--distance-km={bad}"], capsys)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--distance-km" in err and reason in err


def test_distance_range_includes_stop():
    assert parse_distance_range("0:200:50").tolist() == [0.0, 50.0, 100.0, 150.0, 200.0]
    assert parse_distance_range("0:0.3:0.1") == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert parse_distance_range("65").tolist() == [65.0]


def test_cli_config_errors_name_the_field(tmp_path, capsys):
    bad = tmp_path / "link.yaml"
    bad.write_text("channel:\n  loss_db_per_km: -1\n")
    with pytest.raises(ConfigError, match="channel.loss_db_per_km = -1"):
        _run(["keyrate", str(bad), "--distance-km", "0:10:10"], capsys)
    weak = tmp_path / "weak.yaml"       # valid config, but vacuum+weak needs mu_decoy < mu_signal - mu_vacuum
    weak.write_text("source:\n  mu_signal: 0.2\n  mu_decoy: 0.15\n  mu_vacuum: 0.06\n")
    with pytest.raises(ConfigError, match="mu_decoy = 0.15"):
        _run(["keyrate", str(weak), "--distance-km", "0:10:10"], capsys)
    code, out = _run(["keyrate", str(weak), "--distance-km", "10", "--optimise"], capsys)   # optimiser moves them
    assert code == 0 and "max distance" in out.out


def test_key_length_from_observed_counts_matches_the_expected_count_calculation():
    """lim2014_from_counts (parameter estimation on a real block) and lim2014_bounds (expected
    counts) are the same formula: fed the expected counts, they give the same key length."""
    import numpy as np
    from qkdlink.host.theory import lim2014_bounds, lim2014_from_counts, _gain, _errors
    mu, p, pz, N, eta, y0, ed, f = (0.5, 0.1, 0.0002), (0.7, 0.2, 0.1), 0.8, 1e11, 1e-2, 2.4e-6, 0.01, 1.16
    b = lim2014_bounds(eta, y0, ed, mu, p, pz, f_ec=f, n_pulses=N)
    q = np.array([_gain(m, eta, y0) for m in mu])
    eq = np.array([_errors(m, eta, y0, ed) for m in mu])
    ps = np.array(p)
    nz, nx, mx = N * ps * pz * pz * q, N * ps * (1 - pz) ** 2 * q, N * ps * (1 - pz) ** 2 * eq
    got = lim2014_from_counts(nz, nx, mx, N, mu, p, lambda_ec_bits=float(b["lambda_ec"]))
    assert got["s_key_1"] == pytest.approx(float(b["s_key_1"]), rel=1e-9)
    assert got["phase_error"] == pytest.approx(float(b["phase_error"]), rel=1e-9)
    assert abs(got["length_bits"] - float(b["length_bits"])) <= 1
    with pytest.raises(ValueError, match="n_pulses"):
        lim2014_from_counts(nz, nx, mx, 0, mu, p, lambda_ec_bits=0)
