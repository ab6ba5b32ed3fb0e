"""Benchmark: transmitter co-simulation speed, cocotb + Verilator vs amaranth.sim, one run.

Both run the same check (configure over the host link, emit, snapshot, compare with the
model); the emission phase is timed in each. Prints JSON. Goal (issue 2): >= 50x
amaranth.sim and >= 10^6 slots/s on a 2-core machine.

    .venv/bin/python benchmarks/tx_cosim.py [--slots N] [--pysim-slots M]
"""
from __future__ import annotations

import sys

from cosim_speed import comparison, run
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
    return comparison(S, P, {"model_agreement": vl["model_agreement"]}, vl["slots"], vl["emit_wall_s"],
                      py_clocks * P, py["emit_wall_s"], py_ok)


def main(argv=None) -> int:
    return run("tx_cosim", __doc__, measure, 10_000_000, 40_000, argv)


if __name__ == "__main__":
    sys.exit(main())
