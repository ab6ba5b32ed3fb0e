"""Shared parts of the co-simulation speed benchmarks: the comparison record and the CLI."""
from __future__ import annotations

import argparse
import json
import platform

GOAL_SLOTS_PER_S = 1e6
GOAL_SPEEDUP = 50


def comparison(S: int, P: int, verilator: dict, vl_slots: int, vl_wall_s: float,
               py_slots: int, py_wall_s: float, py_ok: bool) -> dict:
    """One configuration's result: both simulators side by side, the ratio and the goals."""
    vl_rate, py_rate = vl_slots / vl_wall_s, py_slots / py_wall_s
    return {
        "samples_per_clock": S, "slots_per_clock": P,
        "verilator": {**verilator, "slots": vl_slots, "wall_s": round(vl_wall_s, 3), "slots_per_s": round(vl_rate)},
        "amaranth_sim": {"slots": py_slots, "wall_s": round(py_wall_s, 3), "slots_per_s": round(py_rate),
                         "model_agreement": py_ok},
        "speedup_vs_amaranth_sim": round(vl_rate / py_rate, 1),
        "goal_slots_per_s": GOAL_SLOTS_PER_S, "goal_speedup": GOAL_SPEEDUP,
        "meets_goals": vl_rate >= GOAL_SLOTS_PER_S and vl_rate / py_rate >= GOAL_SPEEDUP,
    }


def run(name: str, doc: str, measure, default_slots: int, default_pysim_slots: int, argv=None) -> int:
    """Parse ``--slots``/``--pysim-slots``, measure (S, P) = (4, 4) and (2, 1), print JSON."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--slots", type=int, default=default_slots)
    ap.add_argument("--pysim-slots", type=int, default=default_pysim_slots)
    args = ap.parse_args(argv)
    results = [measure(S, P, args.slots, args.pysim_slots) for S, P in ((4, 4), (2, 1))]
    print(json.dumps({"benchmark": name, "machine": platform.machine(), "python": platform.python_version(),
                      "results": results}, indent=2))
    return 0
