"""The raw Verilator baseline (C++ main, no Python) does the same work as the cocotb run.

It replays the host traffic the cocotb testbench logged, at the same simulation times, into
the same compiled model with the same event file: every byte either endpoint sent in the
cocotb run must come out of the raw run too, in the same order, and the final snapshot
answers in the raw stream must match the models (Alice's digests, Bob's record digest).
"""
import json

import numpy as np
import pytest

from qkdlink.cosim import raw_verilator as rv
from qkdlink.cosim.bob import write_events
from qkdlink.cosim.fulllink import run_full_link
from qkdlink.gateware.alice import AliceParams
from qkdlink.gateware.bob import BobParams
from qkdlink.host.config import default_link_config


def test_event_file_round_trip(tmp_path):
    rng = np.random.default_rng(11)
    S, n = 4, 500
    det = (rng.random((n, 4)) < 0.02) * rng.integers(1, 1 << S, (n, 4))
    sync = (rng.random(n) < 0.01) * rng.integers(1, 1 << S, n)
    write_events(tmp_path / "stim.hex", det.astype(np.uint64), sync.astype(np.uint64), S)
    got_det, got_sync = rv.read_events(tmp_path / "stim.hex", S, n + 10)
    assert np.array_equal(got_det[:n], det) and not got_det[n:].any()
    assert np.array_equal(got_sync[:n], sync) and not got_sync[n:].any()


@pytest.mark.verilator
def test_raw_run_replays_the_cocotb_run_and_matches_the_models(tmp_path, monkeypatch):
    cfg = default_link_config()
    alice, bob = AliceParams.from_config(cfg.gateware), BobParams.from_config(cfg.gateware)
    monkeypatch.setenv("QKDLINK_TB_TRAFFIC", str(tmp_path / "traffic.json"))
    co = run_full_link(cfg, slots=200_000, seed=7, work_dir=tmp_path)
    assert co["model_agreement"], co["mismatches"]
    traffic = json.loads((tmp_path / "traffic.json").read_text())
    spec = json.loads((tmp_path / "spec.json").read_text())
    assert traffic["writes"][0][2] == 1 and any(w[1] == 1 for w in traffic["writes"])   # reset, Bob's link

    binary = rv.build_raw(rv.fulllink_build_dir(alice, bob))
    n = rv.write_schedule(tmp_path / "schedule.txt", traffic)
    raw = rv.run_raw(binary, tmp_path / "schedule.txt", tmp_path / "stim.hex", tmp_path)
    assert raw["applied"] == n and raw["end_steps"] >= traffic["end_steps"]
    assert rv.check_raw_run(raw, traffic, spec, alice, bob, tmp_path / "stim.hex") == []
    assert co["detections"] > 100                     # the run carried sifting traffic

    # The check notices a changed byte (here: the last byte Alice sent, in her final answer).
    bad = dict(raw, captured=dict(raw["captured"]))
    a = bytearray(bad["captured"]["alice"])
    a[len(bytes.fromhex(traffic["captured"]["0"])) - 3] ^= 0x01
    bad["captured"]["alice"] = bytes(a)
    assert any("alice's bytes differ" in m for m in rv.check_raw_run(bad, traffic, spec, alice, bob, tmp_path / "stim.hex"))
