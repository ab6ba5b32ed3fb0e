"""End-to-end sifting co-simulation: Alice and Bob gateware in one Verilated design.

Alice emits continuously; the hosts sift concurrently, polling Bob's detections.

An ideal channel (``cosim/sv/ideal_channel.sv``: loss only, no errors) connects Alice's
pins to Bob's inputs inside the simulator; the testbench (:mod:`qkdlink.cosim.tb.link_tb`)
plays both hosts: it passes Bob's detections to Alice (SIFT_QUERY), Alice's answers to Bob
(SIFT_APPLY), and collects both ends' SIFTED_KEY entries. With an error-free channel the two
sifted keys must be identical, and their length must match the basis-match fraction.
"""
from __future__ import annotations

import json
import tempfile
import time
from importlib import resources
from pathlib import Path

from ..gateware.alice import AliceParams
from ..gateware.alice_model import AliceSettings
from ..gateware.bob import BobParams
from ..gateware.bob_model import BobSettings
from ..gateware.link import Link
from .toolchain import build, run_cocotb, link_pump_sv, PUBLIC as PUB

__all__ = ["link_verilog", "link_top_sv", "link_instance_sv", "run_link_cosim", "TOPLEVEL", "PUMP_WORD_BYTES"]

TOPLEVEL = "link_top"
# Bytes per link-pump ring entry: the testbench moves a burst in one VPI access per 32 bytes
# (per-byte accesses were most of the testbench's time).
PUMP_WORD_BYTES = 32


def link_verilog(alice: AliceParams, bob: BobParams) -> str:
    from amaranth.back import verilog
    return verilog.convert(Link(alice, bob), name="link", emit_src=False)


def link_instance_sv(laser: str, sync: str) -> str:
    """SV lines: the two host-link pumps (``PUMP_WORD_BYTES`` per ring entry) and the ``link``
    instance (Bob's inputs ``det``, ``sync_in``); Alice's laser and sync pins go to the nets
    named ``laser``/``sync`` ('' = open)."""
    return f"""  logic [7:0] arx_p, atx_p, brx_p, btx_p;
  logic arx_v, arx_r, atx_v, atx_r, brx_v, brx_r, btx_v, btx_r;
  link_pump #(.WORD_BYTES({PUMP_WORD_BYTES})) alice_pump(.clk(clk), .rx_payload(arx_p), .rx_valid(arx_v),
                     .rx_ready(arx_r), .tx_payload(atx_p), .tx_valid(atx_v), .tx_ready(atx_r));
  link_pump #(.WORD_BYTES({PUMP_WORD_BYTES})) bob_pump(.clk(clk), .rx_payload(brx_p), .rx_valid(brx_v),
                     .rx_ready(brx_r), .tx_payload(btx_p), .tx_valid(btx_v), .tx_ready(btx_r));
  link dut(.clk(clk), .rst(rst),
    .alice_rx__payload(arx_p), .alice_rx__valid(arx_v), .alice_rx__ready(arx_r),
    .alice_tx__payload(atx_p), .alice_tx__valid(atx_v), .alice_tx__ready(atx_r),
    .bob_rx__payload(brx_p), .bob_rx__valid(brx_v), .bob_rx__ready(brx_r),
    .bob_tx__payload(btx_p), .bob_tx__valid(btx_v), .bob_tx__ready(btx_r),
    .qrng__payload('0), .qrng__valid(1'b0), .qrng__ready(),
    .laser({laser}), .sync({sync}), .im_code(), .det(det), .sync_in(sync_in), .bob_running(bob_running));
"""


def link_top_sv(S: int, log2_loss: int) -> str:
    return f"""`timescale 1ns/1ps
// End-to-end test top: Alice and Bob (module link), an ideal channel, two host-link pumps.
module {TOPLEVEL}(input logic rst {PUB});
  logic clk {PUB} = 1'b0;
  always #1 clk = ~clk;
  logic [{4 * S - 1}:0] laser, det;
  logic [{S - 1}:0] sync, sync_in;
  logic bob_running;
  ideal_channel #(.S({S}), .LOG2_LOSS({log2_loss})) channel(
    .clk(clk), .laser(laser), .sync(sync), .det(det), .sync_out(sync_in));
{link_instance_sv('laser', 'sync')}endmodule
"""


def run_link_cosim(alice: AliceParams, bob: BobParams, alice_settings: AliceSettings,
                   bob_settings: BobSettings, *, slots: int, log2_loss: int = 8,
                   work_dir: Path | None = None) -> dict:
    """Run ``slots`` slots through the ideal channel with hardware sifting at both ends."""
    S, P = alice.samples_per_clock, alice.slots_per_clock
    sources = {"link.v": link_verilog(alice, bob), "link_pump.sv": link_pump_sv(),
               "ideal_channel.sv": resources.files("qkdlink.cosim").joinpath("sv", "ideal_channel.sv").read_text(),
               f"{TOPLEVEL}.sv": link_top_sv(S, log2_loss)}
    t0 = time.perf_counter()
    build_dir = build(f"link-s{S}p{P}", sources, TOPLEVEL)
    t_build = time.perf_counter() - t0
    # The hosts look for new detections every poll_clocks clocks, well inside the time Alice's
    # choice memory keeps a slot (depth / P clocks), as a real host would.
    poll_clocks = max(256, alice.choice_depth_slots // (8 * P))
    slots = -(-slots // P) * P
    spec = {"alice": alice_settings.as_dict(), "bob": bob_settings.as_dict(), "slots_per_clock": P,
            "slots": slots, "poll_clocks": poll_clocks}
    with tempfile.TemporaryDirectory(prefix="qkdlink-link-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "spec.json").write_text(json.dumps(spec))
        env = {"QKDLINK_TB_SPEC": str(work / "spec.json"), "QKDLINK_TB_OUT": str(work / "out.json")}
        t1 = time.perf_counter()
        run_cocotb(build_dir, TOPLEVEL, "qkdlink.cosim.tb.link_tb", work_dir=work, env=env)
        t_run = time.perf_counter() - t1
        out = json.loads((work / "out.json").read_text())
    out.update(build_s=t_build, run_s=t_run)
    return out
