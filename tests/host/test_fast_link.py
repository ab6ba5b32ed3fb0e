"""host/fast_link.py: the vectorised link model produces the co-simulation's output format with
the analytic statistics, the receiver's squashing map, reproducibly from its seed."""
import dataclasses
import math

import numpy as np
import pytest

from qkdlink.cosim.channel import expected_statistics
from qkdlink.host import distill_cli, fast_link
from qkdlink.host.config import default_link_config, link_config_from_dict


def cfg_km(km):
    base = default_link_config()
    return dataclasses.replace(base, channel=dataclasses.replace(base.channel, length_km=km))


@pytest.fixture(scope="module")
def run():
    cfg = cfg_km(25.0)
    return cfg, fast_link.simulate(cfg, slots=4_000_000, seed=21, chunk_slots=1_500_000)


def test_rows_format_and_both_ends_agree_on_public_parts(run):
    cfg, r = run
    a, b = r["alice_rows"], r["bob_rows"]
    assert a.dtype == b.dtype == np.uint64 and a.shape == b.shape == (r["sifted"], 2)
    assert r["sifted"] > 10_000
    assert (np.diff(a[:, 0].astype(np.int64)) > 0).all() and int(a[-1, 0]) < r["slots"]
    assert np.array_equal(a[:, 0], b[:, 0])
    assert np.array_equal(a[:, 1] & np.uint64(0x0E), b[:, 1] & np.uint64(0x0E))   # basis, intensity
    assert int(a[:, 1].max()) <= 0x0B and ((a[:, 1] >> np.uint64(2)) <= 2).all()
    assert sum(c["sifted"] for c in r["classes"].values()) == r["sifted"]
    assert sum(c["sent"] for c in r["classes"].values()) == r["slots"]


def test_gain_and_qber_match_the_analytic_expectation(run):
    cfg, r = run
    exp = expected_statistics(cfg, n_slots=r["slots"])
    for name in ("signal", "decoy"):
        c, e = r["classes"][name], exp.classes[name]
        sigma_gain = math.sqrt(e.expected_gain * (1 - e.expected_gain) / c["sent"])
        assert abs(c["gain"] - e.expected_gain) < 4 * sigma_gain, (name, c["gain"], e.expected_gain)
    s, e = r["classes"]["signal"], exp.classes["signal"]
    sigma_qber = math.sqrt(e.expected_qber * (1 - e.expected_qber) / s["sifted"])
    assert abs(s["qber"] - e.expected_qber) < 4 * sigma_qber, (s["qber"], e.expected_qber)
    assert abs(s["sifted"] / s["detected"] - 0.5) < 0.02           # passive basis choice, p_z = 1/2


def test_seeded_and_chunking_does_not_change_the_statistics(run):
    cfg, r = run
    again = fast_link.simulate(cfg, slots=4_000_000, seed=21, chunk_slots=1_500_000)
    assert np.array_equal(again["alice_rows"], r["alice_rows"]) and np.array_equal(again["bob_rows"], r["bob_rows"])
    other = fast_link.simulate(cfg, slots=200_000, seed=22)
    assert not np.array_equal(other["alice_rows"][:100], r["alice_rows"][:100])
    one = fast_link.simulate(cfg, slots=4_000_000, seed=21, chunk_slots=4_000_000)
    assert abs(one["sifted"] - r["sifted"]) < 5 * math.sqrt(r["sifted"])


def test_squashing_map_of_the_receiver():
    """docs/receiver.md: one click -> its detector; one basis -> that basis, two clicks -> random
    bit; both bases -> random basis, then that basis' click (or a random bit for two)."""
    rng = np.random.default_rng(0)
    n = 4000
    slot = np.repeat(np.arange(n), 2)
    # every slot: H and V clicked (double click in Z)
    s, basis, bit, multi = fast_link._bob_decode(slot, np.tile([0, 1], n).astype(np.uint8), rng)
    assert (basis == 0).all() and multi.all() and 0.45 < bit.mean() < 0.55
    # single clicks: A in slot 7, H in slot 9 (listed out of order, duplicate click merged)
    s, basis, bit, multi = fast_link._bob_decode(np.array([9, 7, 7]), np.array([0, 3, 3], np.uint8), rng)
    assert s.tolist() == [7, 9] and basis.tolist() == [1, 0] and bit.tolist() == [1, 0] and not multi.any()
    # V and D in every slot: random basis, then the single click of that basis
    s, basis, bit, multi = fast_link._bob_decode(slot, np.tile([1, 2], n).astype(np.uint8), rng)
    assert multi.all() and 0.45 < basis.mean() < 0.55
    assert (bit[basis == 0] == 1).all() and (bit[basis == 1] == 0).all()


def test_write_sim_output_is_what_the_distill_cli_reads(run, tmp_path):
    cfg, r = run
    rep = fast_link.write_sim_output(tmp_path / "run.json", r, cfg)
    report, a, b = distill_cli.load_sim_output(tmp_path / "run.json")
    assert report["slots"] == rep["slots"] == r["slots"] and report["model"] == "fast_link"
    assert np.array_equal(a, r["alice_rows"]) and np.array_equal(b, r["bob_rows"])
    assert link_config_from_dict(report["config"]) == cfg


def test_bad_arguments():
    cfg = cfg_km(10.0)
    with pytest.raises(ValueError, match="slots"):
        fast_link.simulate(cfg, slots=0)
    with pytest.raises(ValueError, match="chunk_slots"):
        fast_link.simulate(cfg, slots=10, chunk_slots=0)
    assert fast_link.expected_slots_for_sifted(cfg, 1000) > 1000
