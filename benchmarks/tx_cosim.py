"""Benchmark: transmitter co-simulation speed, cocotb + Verilator vs amaranth.sim, one run.

Both run the same check (configure over the host link, emit, snapshot, compare with the
model); the emission phase is timed in each. Prints JSON. Goal (issue 2): >= 50x
amaranth.sim and >= 10^6 slots/s on a 2-core machine.

    .venv/bin/python benchmarks/tx_cosim.py [--slots N] [--pysim-slots M]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys

from qkdlink.cosim.alice import run_alice_cosim
from qkdlink.cosim.alice_pysim import run_alice_pysim
from qkdlink.gateware.alice import AliceParams
from qkdlink.gateware.alice_model import AliceSettings, alice_model


def measure(S: int, P: int, slots: int, pysim_slots: int) -> dict:
    params = AliceParams(S, P)
    settings = AliceSettings(seed=1)
    clocks = slots // P
    vl = run_alice_cosim(params, settings, [clocks // 4] * 4)
    py_clocks = pysim_slots // P
    py = run_alice_pysim(params, settings, [py_clocks])
    py_ok = py["snapshots"] == alice_model(params, settings, [py_clocks]).snapshots
    vl_rate = vl["slots"] / vl["emit_wall_s"]
    py_rate = py_clocks * P / py["emit_wall_s"]
    return {
        "samples_per_clock": S, "slots_per_clock": P,
        "verilator": {"slots": vl["slots"], "emit_wall_s": round(vl["emit_wall_s"], 3),
                      "slots_per_s": round(vl_rate), "clocks_per_s": round(vl_rate / P),
                      "model_agreement": vl["model_agreement"]},
        "amaranth_sim": {"slots": py_clocks * P, "emit_wall_s": round(py["emit_wall_s"], 3),
                         "slots_per_s": round(py_rate), "model_agreement": py_ok},
        "speedup_vs_amaranth_sim": round(vl_rate / py_rate, 1),
        "goal_slots_per_s": 1e6, "goal_speedup": 50,
        "meets_goals": vl_rate >= 1e6 and vl_rate / py_rate >= 50,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=10_000_000)
    ap.add_argument("--pysim-slots", type=int, default=40_000)
    args = ap.parse_args(argv)
    results = [measure(S, P, args.slots, args.pysim_slots) for S, P in ((4, 4), (2, 1))]
    print(json.dumps({"benchmark": "tx_cosim", "machine": platform.machine(), "python": platform.python_version(),
                      "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
