"""Full-link co-simulation: Alice and Bob gateware in one Verilated design, the physical
channel model between them, hardware sifting through both host links.

The channel needs Alice's per-slot symbols; they come from Alice's bit-exact model and are
proven to be the gateware's by its symbol and pin digests, read back at the end of the run
(DESIGN contract 3). The channel (``cosim/channel``) turns them into Bob's detector and sync
words, which the test top replays into Bob's inputs while Bob runs — no Python per clock.
The testbench (:mod:`qkdlink.cosim.tb.link_tb`) plays both hosts and sifts while Alice emits.
The report has, per intensity class, what was sent, detected and sifted, the errors, the
measured gain and QBER next to the analytic expectation, and both gateware-vs-model checks.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from ..gateware.alice import AliceParams
from ..gateware.alice_model import AliceSettings, alice_model, SNAPSHOT_FIELDS
from ..gateware.bob import BobParams
from ..gateware.bob_model import BobSettings, bob_model
from ..gateware import protocol as proto
from ..hdl.symbols import INTENSITY_BLANK
from .bob import write_events, replay_sv, MAX_EVENTS
from .channel import Channel
from .channel.expectations import expected_statistics
from .link import link_verilog, link_instance_sv
from .toolchain import build, run_cocotb, link_pump_sv, PUBLIC as PUB

__all__ = ["run_full_link", "fulllink_top_sv", "CLASSES"]

TOPLEVEL = "fulllink_top"
CLASSES = ("signal", "decoy", "vacuum")


def fulllink_top_sv(S: int, max_events: int = MAX_EVENTS) -> str:
    """Test top: module ``link`` (Alice + Bob), two link pumps, Bob's inputs replayed from ``+stim``."""
    return f"""`timescale 1ns/1ps
// Full-link test top: Alice and Bob (module link); Bob's detector and sync inputs come from the
// channel model as a sparse event file (+stim=FILE, see cosim/bob.py), replayed per running
// clock of Bob; Alice's pins are checked through her digests.
module {TOPLEVEL}(input logic rst {PUB});
  logic clk {PUB} = 1'b0;
  always #1 clk = ~clk;
  logic bob_running;
{replay_sv(S, "bob_running", max_events)}{link_instance_sv("", "")}endmodule
"""


def bob_settings_from_config(cfg, seed: int) -> BobSettings:
    """Bob's registers for a link config: dead time in samples from ``dead_time_ns``."""
    g = cfg.gateware
    dead = math.ceil(cfg.detectors.dead_time_ns * g.clock_mhz * g.samples_per_clock / 1000.0)
    return BobSettings(seed=seed, dead_time_samples=min(dead, 0xFFFF))


def _class_statistics(alice_key, bob_key, alice_snap, alice_sift, expect) -> dict:
    """Per intensity class: sent, detected, sifted, errors, gain and QBER vs expectation."""
    out = {}
    bob_bits = {slot: key & 1 for slot, key in bob_key}
    for i, name in enumerate(CLASSES):
        sent = alice_snap[f"SNAP_SENT_{name.upper()}_Z"] + alice_snap[f"SNAP_SENT_{name.upper()}_X"]
        detected = sum(alice_sift[f"SNAP_SIFT_DETECTED_{name.upper()}_{b}_LO"] for b in "ZX")
        entries = [(slot, key) for slot, key in alice_key if proto.unpack_key_byte(key)[2] == i]
        errors = sum(1 for slot, key in entries if bob_bits.get(slot) != key & 1)
        e = expect[name]
        gain = detected / sent if sent else 0.0
        qber = errors / len(entries) if entries else 0.0
        sigma_gain = math.sqrt(max(e.expected_gain * (1 - e.expected_gain), 0.0) / sent) if sent else 0.0
        sigma_qber = math.sqrt(max(e.expected_qber * (1 - e.expected_qber), 0.0) / len(entries)) if entries else 0.0
        out[name] = {"sent": sent, "detected": detected, "sifted": len(entries), "errors": errors,
                     "gain": gain, "expected_gain": e.expected_gain, "sigma_gain": sigma_gain,
                     "qber": qber, "expected_qber": e.expected_qber, "sigma_qber": sigma_qber}
    return out


def run_full_link(cfg, *, slots: int, seed: int = 1, work_dir: Path | None = None,
                  channel_options: dict | None = None) -> dict:
    """Co-simulate ``slots`` slots of the link ``cfg`` (a :class:`LinkConfig`); returns the report.

    ``channel_options`` are passed to :class:`~qkdlink.cosim.channel.Channel` (``eve``,
    ``downlink`` + ``pass_time_s``, ``clock_offset_ppm``, ``extra_delay_ps``, ...).
    """
    g = cfg.gateware
    S, P = g.samples_per_clock, g.slots_per_clock
    alice = AliceParams.from_config(g)
    bob = BobParams.from_config(g)
    a_set = AliceSettings.from_config(cfg)
    a_set = AliceSettings(**{**a_set.as_dict(), "seed": seed})
    b_set = bob_settings_from_config(cfg, seed + 1)
    n_clocks = -(-slots // P)
    slots = n_clocks * P

    t0 = time.perf_counter()
    emission = alice_model(alice, a_set, [n_clocks])
    codes = emission.codes.reshape(-1)
    options = dict(channel_options or {})
    channel = Channel(cfg, seed=seed + 2, **options)
    detections = channel.propagate(codes, first_slot=0)
    ppm = abs(float(options.get("clock_offset_ppm", 0.0)))
    n_bob = math.ceil(n_clocks * (1 + ppm * 1e-6)) + 64
    det, sync = channel.render(detections, emission.sync.reshape(-1), n_bob)
    t_channel = time.perf_counter() - t0

    sources = {"link.v": link_verilog(alice, bob), "link_pump.sv": link_pump_sv(),
               f"{TOPLEVEL}.sv": fulllink_top_sv(S)}
    t1 = time.perf_counter()
    build_dir = build(f"fulllink-s{S}p{P}", sources, TOPLEVEL)
    t_build = time.perf_counter() - t1
    poll_clocks = max(256, alice.choice_depth_slots // (8 * P))
    spec = {"alice": a_set.as_dict(), "bob": b_set.as_dict(), "slots_per_clock": P, "slots": slots,
            "poll_clocks": poll_clocks}
    with tempfile.TemporaryDirectory(prefix="qkdlink-sim-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        n_events = write_events(work / "stim.hex", det, sync, S)
        (work / "spec.json").write_text(json.dumps(spec))
        env = {"QKDLINK_TB_SPEC": str(work / "spec.json"), "QKDLINK_TB_OUT": str(work / "out.json")}
        t2 = time.perf_counter()
        run_cocotb(build_dir, TOPLEVEL, "qkdlink.cosim.tb.link_tb", work_dir=work, env=env,
                   plusargs=[f"+stim={work / 'stim.hex'}"])
        wall = time.perf_counter() - t2
        out = json.loads((work / "out.json").read_text())

    # Gateware vs model: Alice's emission (digests of every symbol and pin word), Bob's records.
    mismatches = []
    got_a, exp_a = out["alice_snapshot"], emission.snapshots[-1]
    for name in SNAPSHOT_FIELDS:
        if name != "SNAP_CHOICE_LOST" and got_a[name] != exp_a[name]:
            mismatches.append(f"Alice {name}: gateware {got_a[name]} != model {exp_a[name]}")
    n_run = out["bob_counters"]["SNAP_LOCAL_SLOT"] // P
    det_run = np.zeros((n_run, 4), np.uint64)
    sync_run = np.zeros(n_run, np.uint64)
    k = min(n_run, n_bob)
    det_run[:k], sync_run[:k] = det[:k], sync[:k]
    exp_b = bob_model(bob, b_set, det_run, sync_run).snapshot
    if out["bob_counters"]["SNAP_DIGEST_RECORDS"] != exp_b["SNAP_DIGEST_RECORDS"]:
        mismatches.append("Bob record digest differs from the model")

    blank = float(np.mean((codes >> 2) == INTENSITY_BLANK))
    expect = expected_statistics(cfg, n_slots=slots, p_blank=blank)
    classes = _class_statistics(out["alice_key"], out["bob_key"], got_a, out["alice_sift_regs"], expect)
    return {
        "slots": slots, "wall_s": wall, "slots_per_s": slots / wall,
        "model_agreement": not mismatches, "mismatches": mismatches,
        "key_slots_identical": [e[0] for e in out["alice_key"]] == [e[0] for e in out["bob_key"]],
        "sifted": len(out["alice_key"]), "detections": out["records"], "events": n_events,
        "classes": classes, "transmittance": channel.transmittance,
        "channel_s": t_channel, "build_s": t_build,
        "alice_key": out["alice_key"], "bob_key": out["bob_key"],
    }
