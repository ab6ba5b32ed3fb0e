"""Co-simulation of the Bob top under Verilator, checked bit for bit against the model.

The detector and sync words of a whole run are written to a sparse event file that the SV
test top loads with ``$readmemh`` and replays, one word per clock while Bob's ``running``
output is high — no Python per clock. The cocotb testbench (:mod:`qkdlink.cosim.tb.bob_tb`)
configures Bob, lets the run go in chunks, and plays Alice's host: it answers the
DETECTIONS records from Alice's choices (``protocol.alice_sift_model``) and hands the
answers to Bob (SIFT_APPLY). The harness then compares the snapshot counters, the record
digest, the histograms, every record and every sifted key entry with the models.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..gateware.bob import Bob, BobParams
from ..gateware.bob_model import BobSettings, bob_model
from ..gateware.regmap import ID_BOB, REGMAP_VERSION
from ..gateware import protocol as proto
from ..hdl.record_fifo import BIT_BIT
from .alice_host import AliceHost, record_queries
from .toolchain import build, run_cocotb, link_pump_sv, PUBLIC as PUB

__all__ = ["bob_verilog", "bob_top_sv", "replay_sv", "build_bob", "run_bob_cosim", "write_events", "TOPLEVEL"]

TOPLEVEL = "bob_top"
MAX_EVENTS = 1 << 20


def bob_verilog(params: BobParams) -> str:
    from amaranth.back import verilog
    return verilog.convert(Bob(params), name="bob", emit_src=False)


def _event_width(S: int) -> int:
    return 32 + 5 * S


def replay_sv(S: int, running: str, max_events: int = MAX_EVENTS) -> str:
    """SV lines that replay the ``+stim`` event file into ``det``/``sync_in`` while ``running``."""
    W = _event_width(S)
    return f"""  logic [{W - 1}:0] events [0:{max_events - 1}];
  logic [31:0] ev_ptr {PUB} = 0;
  logic [31:0] run_clock {PUB} = 0;
  initial begin
    string fname;
    for (int i = 0; i < {max_events}; i++) events[i] = '1;
    if ($value$plusargs("stim=%s", fname)) $readmemh(fname, events);
  end
  wire [{W - 1}:0] ev = events[ev_ptr[{(max_events - 1).bit_length() - 1}:0]];
  wire hit = {running} && ev[{W - 1}:{W - 32}] == run_clock;
  wire [{4 * S - 1}:0] det = hit ? ev[{4 * S - 1}:0] : '0;
  wire [{S - 1}:0] sync_in = hit ? ev[{5 * S - 1}:{4 * S}] : '0;
  always_ff @(posedge clk) if ({running}) begin
    run_clock <= run_clock + 1;
    if (hit) ev_ptr <= ev_ptr + 1;
  end
"""


def bob_top_sv(params: BobParams, max_events: int = MAX_EVENTS) -> str:
    """SV test top: clock, link pump, and the replay of a sparse event file (``+stim=FILE``)."""
    S = params.samples_per_clock
    return f"""`timescale 1ns/1ps
// Co-simulation top for Bob. Each line of the +stim file is one event, hex:
// {{clock[31:0], sync[{S - 1}:0], det_A, det_D, det_V, det_H ({S} bits each)}}; `clock` counts
// Bob's running clocks. The line after the last event has clock = 0xFFFFFFFF.
module {TOPLEVEL}(input logic rst {PUB}, output logic running {PUB});
  logic clk {PUB} = 1'b0;
  always #1 clk = ~clk;
{replay_sv(S, 'running', max_events)}  logic [7:0] rx_payload, tx_payload;
  logic rx_valid, rx_ready, tx_valid, tx_ready;
  link_pump pump(.clk(clk), .rx_payload(rx_payload), .rx_valid(rx_valid), .rx_ready(rx_ready),
                 .tx_payload(tx_payload), .tx_valid(tx_valid), .tx_ready(tx_ready));
  bob dut(.clk(clk), .rst(rst),
    .rx__payload(rx_payload), .rx__valid(rx_valid), .rx__ready(rx_ready),
    .tx__payload(tx_payload), .tx__valid(tx_valid), .tx__ready(tx_ready),
    .det(det), .sync_in(sync_in), .running(running));
endmodule
"""


def build_bob(params: BobParams, *, waves: bool = False) -> Path:
    sources = {"bob.v": bob_verilog(params), "link_pump.sv": link_pump_sv(), f"{TOPLEVEL}.sv": bob_top_sv(params)}
    tag = f"bob-s{params.samples_per_clock}p{params.slots_per_clock}"
    return build(tag, sources, TOPLEVEL, waves=waves)


def write_events(path: Path, det: np.ndarray, sync: np.ndarray, S: int) -> int:
    """Write the non-zero clocks of ``det``/``sync`` as a $readmemh event file; returns the count."""
    det = np.asarray(det, dtype=np.uint64)
    sync = np.asarray(sync, dtype=np.uint64)
    clocks = np.nonzero(det.any(axis=1) | (sync != 0))[0]
    if clocks.size >= MAX_EVENTS:
        raise ValueError(f"{clocks.size} stimulus events exceed the test top's {MAX_EVENTS - 1}")
    digits = (_event_width(S) + 3) // 4
    lines = []
    for k in clocks:
        value = int(sync[k])
        for c in (3, 2, 1, 0):
            value = (value << S) | int(det[k, c])
        value |= int(k) << (5 * S)
        lines.append(f"{value:0{digits}x}")
    lines.append("f" * digits)
    Path(path).write_text("\n".join(lines) + "\n")
    return int(clocks.size)


def run_bob_cosim(params: BobParams, settings: BobSettings, det: np.ndarray, sync: np.ndarray,
                  alice_codes: np.ndarray, alice_first_slot: int, *, chunks: int = 10, record_bits: bool = False,
                  sift: bool = True, keep_records: bool = False, work_dir: Path | None = None,
                  waves: bool = False) -> dict:
    """Replay ``det``/``sync`` into the Verilated Bob, play Alice's host, compare with the models.

    ``alice_codes``: Alice's 4-bit symbol of every slot from ``alice_first_slot`` on, used to
    answer Bob's detections (slots outside it are answered LOST).
    """
    P = params.slots_per_clock
    n = int(det.shape[0])
    t0 = time.perf_counter()
    build_dir = build_bob(params, waves=waves)
    t_build = time.perf_counter() - t0
    spec = {"params": params.as_dict(), "settings": settings.as_dict(), "clocks": n, "chunks": chunks,
            "alice_first_slot": int(alice_first_slot), "record_bits": bool(record_bits), "sift": bool(sift)}
    with tempfile.TemporaryDirectory(prefix="qkdlink-bob-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        n_events = write_events(work / "stim.hex", det, sync, params.samples_per_clock)
        np.save(work / "alice_codes.npy", np.asarray(alice_codes, dtype=np.uint8))
        (work / "spec.json").write_text(json.dumps(spec))
        env = {"QKDLINK_TB_SPEC": str(work / "spec.json"), "QKDLINK_TB_OUT": str(work / "out.json"),
               "QKDLINK_TB_CODES": str(work / "alice_codes.npy")}
        t1 = time.perf_counter()
        run_cocotb(build_dir, TOPLEVEL, "qkdlink.cosim.tb.bob_tb", work_dir=work, env=env, waves=waves,
                   plusargs=[f"+stim={work / 'stim.hex'}"])
        t_run = time.perf_counter() - t1
        measured = json.loads((work / "out.json").read_text())

    t2 = time.perf_counter()
    n_run = measured["snapshot"]["SNAP_LOCAL_SLOT"] // P
    pad = n_run - n
    det_full = np.concatenate([det, np.zeros((pad, 4), np.uint64)]) if pad > 0 else det
    sync_full = np.concatenate([sync, np.zeros(pad, np.uint64)]) if pad > 0 else sync
    expect = bob_model(params, settings, det_full, sync_full)
    t_model = time.perf_counter() - t2

    mismatches = []
    if measured["ident"] != [ID_BOB, REGMAP_VERSION, params.build_word]:
        mismatches.append(f"ID/VERSION/BUILD {measured['ident']}")
    for name, value in expect.snapshot.items():
        got = measured["snapshot"].get(name)
        if got != value:
            mismatches.append(f"{name}: gateware {got} != model {value}")
    if measured["snapshot"]["SNAP_RECORDS_DROPPED"]:
        mismatches.append(f"{measured['snapshot']['SNAP_RECORDS_DROPPED']} records dropped")
    hist = np.array(measured["histogram"]).reshape(expect.histogram.shape)
    if not np.array_equal(hist, expect.histogram):
        mismatches.append(f"histogram gateware {hist.tolist()} != model {expect.histogram.tolist()}")
    records = np.array(measured["records"], dtype=np.uint64)
    sent = expect.records if record_bits else expect.records & ~np.uint64(1 << BIT_BIT)
    if not np.array_equal(records, sent):
        k = next((i for i, (a, b) in enumerate(zip(records, sent)) if a != b), min(len(records), len(sent)))
        mismatches.append(f"records: {len(records)} received, {len(expect.records)} expected; first difference at {k}")

    # Sifting: what Alice's gateware would answer, and what Bob must then keep.
    answers, alice_kept, _ = AliceHost(alice_codes, alice_first_slot).sift(expect.records)
    pending = [(s, b, (int(r) >> 49) & 1) for (s, b), r in zip(record_queries(expect.records), expect.records)]
    bob_kept, _, _ = proto.bob_apply_model(pending, answers)
    got_key = [tuple(e) for e in measured["sifted_key"]]
    if sift and got_key != [tuple(e) for e in bob_kept]:
        mismatches.append(f"sifted key: {len(got_key)} entries from the gateware, {len(bob_kept)} expected")
    alice_key = {s: k for s, k in alice_kept}
    errors = sum(1 for s, k in got_key if (alice_key.get(s, -1) & 1) != (k & 1))
    extra = {"received_records": [int(r) for r in records], "expected_records": [int(r) for r in sent]} if keep_records else {}
    return {
        **extra,
        "params": params.as_dict(), "settings": settings.as_dict(), "clocks": n_run,
        "slots": n_run * P, "events": n_events,
        "model_agreement": not mismatches, "mismatches": mismatches,
        "snapshot": measured["snapshot"], "records": len(records), "sifted": len(got_key),
        "sifted_errors": errors, "link_counters": measured["link_counters"],
        "histogram_read": [int(v) for v in measured["histogram"]],
        "run_wall_s": measured["run_wall_s"], "build_s": t_build, "run_s": t_run, "model_s": t_model,
        "slots_per_s": n_run * P / measured["run_wall_s"] if measured["run_wall_s"] else None,
    }
