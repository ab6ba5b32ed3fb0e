"""Co-simulation of the Alice top under Verilator, checked bit for bit against the model.

:func:`run_alice_cosim` builds (once per design hash) the Verilated transmitter, runs the
cocotb testbench :mod:`qkdlink.cosim.tb.alice_tb` on it, and compares every snapshot —
slot counter, per-class counters, health-test fires, the symbol digest and the pin digest —
and every choice-memory answer with :func:`qkdlink.gateware.alice_model.alice_model`.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..gateware.alice import Alice, AliceParams
from ..gateware.alice_model import AliceSettings, alice_model, SNAPSHOT_FIELDS
from ..gateware.regmap import ID_ALICE, REGMAP_VERSION
from ..hdl.choice_memory import STATUS_OK, STATUS_LOST, STATUS_FUTURE
from .toolchain import build, run_cocotb, link_pump_sv, PUBLIC as PUB
from .progress import ProgressBar

__all__ = ["alice_verilog", "alice_top_sv", "build_alice", "run_alice_cosim", "TOPLEVEL"]

TOPLEVEL = "alice_top"


def alice_verilog(params: AliceParams) -> str:
    """Verilog of the Alice top (module ``alice``) from Amaranth's Yosys back end."""
    from amaranth.back import verilog
    return verilog.convert(Alice(params), name="alice", emit_src=False)


def alice_top_sv(params: AliceParams) -> str:
    """A SystemVerilog test top: makes the clock itself (no Python per cycle) and flattens ports."""
    S, P = params.samples_per_clock, params.slots_per_clock
    q = 32 * P
    return f"""`timescale 1ns/1ps
// Co-simulation top for Alice: the clock toggles inside the simulator (2 ns period) and the
// host link goes through a link_pump (cosim/sv/link_pump.sv), so Python never steps the
// clock itself. Ports and clock are marked public for cocotb's VPI access (the build does
// not use --public-flat-rw, which would expose and slow down every internal signal).
module {TOPLEVEL}(
  input  logic rst {PUB},
  input  logic [{q - 1}:0] qrng_payload {PUB}, input logic qrng_valid {PUB}, output logic qrng_ready {PUB},
  output logic [{4 * S - 1}:0] laser {PUB}, output logic [{S - 1}:0] sync {PUB},
  output logic [{2 * P - 1}:0] im_code {PUB}
);
  logic clk {PUB} = 1'b0;
  always #1 clk = ~clk;
  logic [7:0] rx_payload, tx_payload;
  logic rx_valid, rx_ready, tx_valid, tx_ready;
  link_pump pump(.clk(clk), .rx_payload(rx_payload), .rx_valid(rx_valid), .rx_ready(rx_ready),
                 .tx_payload(tx_payload), .tx_valid(tx_valid), .tx_ready(tx_ready));
  alice dut(
    .clk(clk), .rst(rst),
    .rx__payload(rx_payload), .rx__valid(rx_valid), .rx__ready(rx_ready),
    .tx__payload(tx_payload), .tx__valid(tx_valid), .tx__ready(tx_ready),
    .qrng__payload(qrng_payload), .qrng__valid(qrng_valid), .qrng__ready(qrng_ready),
    .laser(laser), .sync(sync), .im_code(im_code)
  );
endmodule
"""


def build_alice(params: AliceParams, *, waves: bool = False) -> Path:
    """Verilate the Alice top for cocotb (cached by design hash)."""
    sources = {"alice.v": alice_verilog(params), "link_pump.sv": link_pump_sv(),
               f"{TOPLEVEL}.sv": alice_top_sv(params)}
    tag = f"alice-s{params.samples_per_clock}p{params.slots_per_clock}"
    return build(tag, sources, TOPLEVEL, waves=waves)


def _expected_choices(emission, P: int, first: int, count: int, end_slot: int, depth: int) -> list[int]:
    flat = emission.codes.reshape(-1)
    out = []
    for q in range(first, first + count):
        if q >= end_slot:
            out.append(STATUS_FUTURE << 4)
        elif q < end_slot - depth + P:
            out.append(STATUS_LOST << 4)
        else:
            out.append(int(flat[q]) | (STATUS_OK << 4))
    return out


def run_alice_cosim(params: AliceParams, settings: AliceSettings, bursts: list[int], *,
                    work_dir: Path | None = None, waves: bool = False, progress: bool = False) -> dict:
    """Run ``bursts`` (running clocks each) on the Verilated transmitter and on the model.

    Returns a report: ``model_agreement`` (bool), ``mismatches`` (list of text), the
    measured snapshots, throughput and build/run times.
    """
    P = params.slots_per_clock
    t0 = time.perf_counter()
    build_dir = build_alice(params, waves=waves)
    t_build = time.perf_counter() - t0
    total_slots = int(sum(bursts)) * P
    depth = params.choice_depth_slots
    # The newest 200 slots, the edge to the future, and the edge of the overwritten past.
    queries = [(max(total_slots - 200, 0), min(200, total_slots)), (max(total_slots - 3, 0), 6)]
    if total_slots > depth + 10:
        queries.append((total_slots - depth + P - 3, 6))
    spec = {"params": params.as_dict(), "settings": settings.as_dict(), "bursts": [int(b) for b in bursts],
            "choice_queries": queries}
    with tempfile.TemporaryDirectory(prefix="qkdlink-alice-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "spec.json").write_text(json.dumps(spec))
        t1 = time.perf_counter()
        env = {"QKDLINK_TB_SPEC": str(work / "spec.json"), "QKDLINK_TB_OUT": str(work / "out.json"),
               "QKDLINK_TB_PROGRESS": str(work / "progress.txt")}
        with ProgressBar(work / "progress.txt", len(bursts), "batches", enabled=progress):
            run_cocotb(build_dir, TOPLEVEL, "qkdlink.cosim.tb.alice_tb", work_dir=work, env=env, waves=waves)
        t_run = time.perf_counter() - t1
        measured = json.loads((work / "out.json").read_text())
    t2 = time.perf_counter()
    emission = alice_model(params, settings, bursts)
    t_model = time.perf_counter() - t2

    mismatches = []
    expect_ident = [ID_ALICE, REGMAP_VERSION, params.build_word]
    if measured["ident"] != expect_ident:
        mismatches.append(f"ID/VERSION/BUILD {measured['ident']} != {expect_ident}")
    for k, (got, exp) in enumerate(zip(measured["snapshots"], emission.snapshots)):
        for name in SNAPSHOT_FIELDS:
            if got[name] != exp[name]:
                mismatches.append(f"burst {k}: {name} gateware {got[name]:#x} != model {exp[name]:#x}")
    for (first, count), ans in zip(queries, measured["choices"]):
        exp = _expected_choices(emission, P, first, count, total_slots, depth)
        if ans["entries"] != exp:
            bad = next(i for i, (a, b) in enumerate(zip(ans["entries"], exp)) if a != b)
            mismatches.append(f"choice memory at slot {first + bad}: gateware {ans['entries'][bad]:#x} "
                              f"!= model {exp[bad]:#x}")
    last = measured["snapshots"][-1] if measured["snapshots"] else {}
    return {
        "params": params.as_dict(),
        "settings": settings.as_dict(),
        "slots": total_slots,
        "bursts": len(bursts),
        "model_agreement": not mismatches,
        "mismatches": mismatches,
        "snapshots": measured["snapshots"],
        "choice_answers_checked": sum(len(a["entries"]) for a in measured["choices"]),
        "link_counters": measured["link_counters"],
        "emit_wall_s": measured["emit_wall_s"],
        "slots_per_s": total_slots / measured["emit_wall_s"] if measured["emit_wall_s"] else None,
        "build_s": t_build,
        "run_s": t_run,
        "model_s": t_model,
        "codes": emission.codes,
        "final": last,
    }


def sent_statistics(report: dict) -> dict:
    """Frequencies of bits, bases and intensity classes from the gateware's own counters."""
    snap = report["final"]
    total = snap["SNAP_SLOT"] - snap["SNAP_BLANK"]
    classes = {}
    for iname in ("SIGNAL", "DECOY", "VACUUM"):
        z, x = snap[f"SNAP_SENT_{iname}_Z"], snap[f"SNAP_SENT_{iname}_X"]
        classes[iname.lower()] = {"Z": z, "X": x, "fraction": (z + x) / total if total else 0.0}
    z_total = sum(snap[f"SNAP_SENT_{i}_Z"] for i in ("SIGNAL", "DECOY", "VACUUM"))
    codes = report["codes"]
    nonblank = (codes >> 2) != 3
    bits = (codes & 1)[nonblank]
    return {"slots": snap["SNAP_SLOT"], "blank": snap["SNAP_BLANK"], "classes": classes,
            "z_fraction": z_total / total if total else 0.0,
            "bit_one_fraction": float(np.mean(bits)) if bits.size else 0.0}
