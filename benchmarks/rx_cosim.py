"""Benchmark: receiver + sifting co-simulation speed, cocotb + Verilator vs amaranth.sim, one run.

Verilator: Bob replays detector and sync input from Alice's modelled emission through a lossy
channel, sends DETECTIONS, and sifts them (SIFT_APPLY) while running, as in the regressions;
the timed span is the run including that host traffic. amaranth.sim: the same design replays
the same input (no sifting traffic, so the baseline is favoured). Both are checked against the
model's record digest. Prints JSON. Goal (issue 3): >= 50x amaranth.sim, >= 10^6 slots/s.

    .venv/bin/python benchmarks/rx_cosim.py [--slots N] [--pysim-slots M]
"""
from __future__ import annotations

import sys

import numpy as np

from cosim_speed import comparison, run
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
    return comparison(S, P, {"records": vl["records"], "sifted": vl["sifted"], "model_agreement": vl["model_agreement"]}, vl["slots"], vl["run_wall_s"],
                      py_clocks * P, py["emit_wall_s"], py_ok)


def main(argv=None) -> int:
    return run("rx_cosim", __doc__, measure, 4_000_000, 20_000, argv)


if __name__ == "__main__":
    sys.exit(main())
