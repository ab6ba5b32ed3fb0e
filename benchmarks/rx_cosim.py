"""Benchmark: receiver + sifting co-simulation speed, cocotb + Verilator vs amaranth.sim, one run.

Verilator: Bob replays detector and sync input from Alice's modelled emission through a lossy
channel, sends DETECTIONS, and sifts them (SIFT_APPLY) while running, as in the regressions;
the timed span is the run including that host traffic. amaranth.sim: the same design replays
the same input (no sifting traffic, so the baseline is favoured). Both are checked against the
model's record digest. Prints JSON. Goal (issue 3): >= 50x amaranth.sim, >= 10^6 slots/s.

    .venv/bin/python benchmarks/rx_cosim.py [--slots N] [--pysim-slots M]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys

import numpy as np

from qkdlink.cosim.bob import run_bob_cosim
from qkdlink.cosim.bob_pysim import run_bob_pysim
from qkdlink.cosim.bob_stimulus import make_stimulus
from qkdlink.gateware.alice import AliceParams
from qkdlink.gateware.alice_model import AliceSettings, alice_model
from qkdlink.gateware.bob import BobParams
from qkdlink.gateware.bob_model import BobSettings, bob_model

FIRST_SLOT = (1 << 40) + 12345
FRAME_LOG2 = 10


def measure(S: int, P: int, slots: int, pysim_slots: int) -> dict:
    params = BobParams(S, P, frame_log2=FRAME_LOG2)
    settings = BobSettings(seed=1, dead_time_samples=2 * S)
    clocks = slots // P
    codes = alice_model(AliceParams(S, P, frame_log2=FRAME_LOG2), AliceSettings(seed=2), [clocks]).codes.reshape(-1)
    stim = make_stimulus(S, P, clocks, codes, alice_first_slot=FIRST_SLOT, frame_log2=FRAME_LOG2,
                         eta=2e-3, dark=1e-4, seed=3)
    vl = run_bob_cosim(params, settings, stim.det, stim.sync, codes, FIRST_SLOT, chunks=50)

    py_clocks = pysim_slots // P
    py = run_bob_pysim(params, settings, stim.det[:py_clocks], stim.sync[:py_clocks])
    n = py["local_slot"] // P
    det = np.zeros((n, 4), np.uint64)
    sync = np.zeros(n, np.uint64)
    det[py["pre_clocks"]:py["pre_clocks"] + py_clocks] = stim.det[:py_clocks]
    sync[py["pre_clocks"]:py["pre_clocks"] + py_clocks] = stim.sync[:py_clocks]
    py_ok = py["SNAP_DIGEST_RECORDS"] == bob_model(params, settings, det, sync).snapshot["SNAP_DIGEST_RECORDS"]
    vl_rate = vl["slots"] / vl["run_wall_s"]
    py_rate = py_clocks * P / py["emit_wall_s"]
    return {
        "samples_per_clock": S, "slots_per_clock": P,
        "verilator": {"slots": vl["slots"], "records": vl["records"], "sifted": vl["sifted"],
                      "run_wall_s": round(vl["run_wall_s"], 3), "slots_per_s": round(vl_rate),
                      "model_agreement": vl["model_agreement"]},
        "amaranth_sim": {"slots": py_clocks * P, "emit_wall_s": round(py["emit_wall_s"], 3),
                         "slots_per_s": round(py_rate), "model_agreement": py_ok},
        "speedup_vs_amaranth_sim": round(vl_rate / py_rate, 1),
        "goal_slots_per_s": 1e6, "goal_speedup": 50,
        "meets_goals": vl_rate >= 1e6 and vl_rate / py_rate >= 50,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=4_000_000)
    ap.add_argument("--pysim-slots", type=int, default=20_000)
    args = ap.parse_args(argv)
    results = [measure(S, P, args.slots, args.pysim_slots) for S, P in ((4, 4), (2, 1))]
    print(json.dumps({"benchmark": "rx_cosim", "machine": platform.machine(), "python": platform.python_version(),
                      "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
