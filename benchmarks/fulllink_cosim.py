"""Benchmark: full-link co-simulation throughput at the default hop, against amaranth.sim and
a raw Verilator run of the same design, all in one run (issue 4).

* cocotb + Verilator: :func:`qkdlink.cosim.fulllink.run_full_link` — Alice and Bob gateware,
  the channel model's detections replayed into Bob, both hosts in Python sifting while Alice
  emits. Timed: the simulator process (``wall_s`` of the report).
* raw Verilator: the same compiled model with a C++ main and no Python
  (:mod:`qkdlink.cosim.raw_verilator`), replaying the host traffic the cocotb run logged at
  the same simulation times, with the same event file, for the same simulated time; checked
  byte for byte against the cocotb run and against the models. Timed: its process.
* amaranth.sim: the same link, the same event file, no sifting traffic (favours it), far
  fewer slots; checked against the models (:mod:`qkdlink.cosim.fulllink_pysim`).

CPU seconds of the simulator processes are reported next to wall seconds (the host may be
shared; the CPU ratios are the load-independent ones). Build time is excluded (cached builds are made before timing).
Goal: >= 10^6 slots/s, >= 100x amaranth.sim, >= 50 % of raw Verilator speed. Prints JSON.

    .venv/bin/python benchmarks/fulllink_cosim.py [--slots N] [--pysim-slots M] [--seed S]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from qkdlink.cosim import raw_verilator as rv
from qkdlink.cosim.fulllink import run_full_link
from qkdlink.cosim.fulllink_pysim import run_fulllink_pysim
from qkdlink.gateware.alice import AliceParams
from qkdlink.gateware.alice_model import AliceSettings
from qkdlink.gateware.bob import BobParams
from qkdlink.gateware.bob_model import BobSettings
from qkdlink.host.config import default_link_config

GOAL_SLOTS_PER_S = 1e6
GOAL_SPEEDUP = 100
GOAL_FRACTION_OF_RAW = 0.5


def measure(slots: int, pysim_slots: int, seed: int) -> dict:
    cfg = default_link_config()
    g = cfg.gateware
    alice, bob = AliceParams.from_config(g), BobParams.from_config(g)
    binary = rv.build_raw(rv.fulllink_build_dir(alice, bob))       # both builds cached, untimed
    with tempfile.TemporaryDirectory(prefix="qkdlink-bench-") as tmp:
        work = Path(tmp)
        saved = os.environ.get("QKDLINK_TB_TRAFFIC")
        os.environ["QKDLINK_TB_TRAFFIC"] = str(work / "traffic.json")
        try:
            co = run_full_link(cfg, slots=slots, seed=seed, work_dir=work)
        finally:
            if saved is None:
                os.environ.pop("QKDLINK_TB_TRAFFIC", None)
            else:
                os.environ["QKDLINK_TB_TRAFFIC"] = saved
        traffic = json.loads((work / "traffic.json").read_text())
        co_cpu = traffic["process_cpu_s"]         # the simulator process, start-up to end of test
        spec = json.loads((work / "spec.json").read_text())
        rv.write_schedule(work / "schedule.txt", traffic)
        raw = rv.run_raw(binary, work / "schedule.txt", work / "stim.hex", work)
        raw_bad = rv.check_raw_run(raw, traffic, spec, alice, bob, work / "stim.hex")
        b_set = dict(spec["bob"])
        b_set["delay_samples"] = tuple(b_set["delay_samples"])
        py = run_fulllink_pysim(alice, bob, AliceSettings(**spec["alice"]), BobSettings(**b_set),
                                work / "stim.hex", slots=pysim_slots)

    n = co["slots"]
    co_rate, co_cpu_rate = n / co["wall_s"], n / co_cpu
    raw_rate, raw_cpu_rate = n / raw["process_wall_s"], n / raw["process_cpu_s"]
    py_rate, py_cpu_rate = py["slots"] / py["emit_wall_s"], py["slots"] / py["emit_cpu_s"]
    fraction, speedup = co_rate / raw_rate, co_rate / py_rate
    return {
        "config": {"file": "host/defaults/link.yaml", "length_km": cfg.channel.length_km,
                   "samples_per_clock": g.samples_per_clock, "slots_per_clock": g.slots_per_clock, "seed": seed},
        "cocotb_verilator": {
            "slots": n, "wall_s": round(co["wall_s"], 3), "cpu_s": round(co_cpu, 3),
            "slots_per_s": round(co_rate), "slots_per_cpu_s": round(co_cpu_rate),
            "testbench_run_wall_s": round(traffic["run_wall_s"], 3), "testbench_run_cpu_s": round(traffic["run_cpu_s"], 3),
            "detections": co["detections"], "sifted": co["sifted"], "host_writes": len(traffic["writes"]),
            "model_agreement": co["model_agreement"], "key_slots_identical": co["key_slots_identical"]},
        "raw_verilator": {
            "slots": n, "wall_s": round(raw["process_wall_s"], 3), "cpu_s": round(raw["process_cpu_s"], 3),
            "slots_per_s": round(raw_rate), "slots_per_cpu_s": round(raw_cpu_rate),
            "loop_wall_s": round(raw["loop_wall_s"], 3), "loop_cpu_s": round(raw["loop_cpu_s"], 3),
            "same_work_and_model_agreement": not raw_bad, "mismatches": raw_bad},
        "amaranth_sim": {
            "slots": py["slots"], "wall_s": round(py["emit_wall_s"], 3), "cpu_s": round(py["emit_cpu_s"], 3),
            "slots_per_s": round(py_rate), "slots_per_cpu_s": round(py_cpu_rate),
            "sifting": False, "model_agreement": py["model_agreement"]},
        "fraction_of_raw": round(fraction, 3), "fraction_of_raw_cpu": round(co_cpu_rate / raw_cpu_rate, 3),
        "speedup_vs_amaranth_sim": round(speedup, 1),
        "speedup_vs_amaranth_sim_cpu": round(co_cpu_rate / py_cpu_rate, 1),
        "goal_slots_per_s": GOAL_SLOTS_PER_S, "goal_speedup": GOAL_SPEEDUP, "goal_fraction_of_raw": GOAL_FRACTION_OF_RAW,
        "meets_goals": co_rate >= GOAL_SLOTS_PER_S and speedup >= GOAL_SPEEDUP and fraction >= GOAL_FRACTION_OF_RAW,
        "meets_goals_cpu": (co_cpu_rate >= GOAL_SLOTS_PER_S and co_cpu_rate / py_cpu_rate >= GOAL_SPEEDUP
                            and co_cpu_rate / raw_cpu_rate >= GOAL_FRACTION_OF_RAW),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=10_000_000, help="slots of the Verilator runs")
    ap.add_argument("--pysim-slots", type=int, default=20_000, help="slots of the amaranth.sim run")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    for name in ("slots", "pysim_slots"):
        if getattr(args, name) < 1000:
            ap.error(f"--{name.replace('_', '-')} must be at least 1000")
    result = measure(args.slots, args.pysim_slots, args.seed)
    print(json.dumps({"benchmark": "fulllink_cosim", "machine": platform.machine(), "python": platform.python_version(),
                      "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                      "results": [result]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
