"""Serve a Verilated endpoint's host link to host software through a pty or a Unix socket.

``qkdlink serve-sim --role alice`` (or :func:`serving`) builds the endpoint's co-simulation
top (cached), starts the simulator in a child process running
:mod:`qkdlink.cosim.tb.serve_tb`, and publishes an address: a pseudo-terminal such as
``/dev/pts/7`` — open it with any serial program or ``qkdlink device --port /dev/pts/7`` —
or ``unix:///path.sock``. The simulated device runs freely meanwhile (Alice emits when told
to; Bob replays an optional detector/sync event file, see :func:`qkdlink.cosim.bob.write_events`).
The host software is the same as for a board (DESIGN contract 4).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

__all__ = ["serving", "ServeError", "main"]

MODULE = "qkdlink.cosim.tb.serve_tb"


class ServeError(RuntimeError):
    """The simulated endpoint could not be started (message says why, with its log)."""


# Co-simulation UART rate: bits of DEFAULT_SIM_DIVISOR clocks keep a served endpoint usable
# (a byte every 10 x 16 clocks, ~12 kbyte/s of host link at ~2 M simulated clocks/s); a board
# build picks its own baud rate (boards/).
DEFAULT_SIM_DIVISOR = 16


def _uart_verilog(clk_hz: float, baud: float) -> str:
    from amaranth.back import verilog
    from ..hdl.uart import UART
    return verilog.convert(UART(clk_hz, baud), name="uart", emit_src=False)


def _uart_top_sv(role: str, top: str, endpoint_sv: str, divisor: int) -> str:
    """The endpoint's test top with the device UART and a host-side line in the host link.

    Rewrites the plain top: the pump's byte streams go through ``uart_host`` (host side of
    the line) and the device's ``uart`` (hdl/uart.py, as on a board) to the endpoint.
    """
    wiring = f"""  logic line_h2d, line_d2h;
  logic [7:0] u_rx_payload, u_tx_payload;
  logic u_rx_valid, u_rx_ready, u_tx_valid, u_tx_ready;
  logic [15:0] uart_framing_errors, uart_rx_overflows;
  uart_host #(.DIVISOR({divisor})) host_line(.clk(clk),
    .in_payload(rx_payload), .in_valid(rx_valid), .in_ready(rx_ready), .line_out(line_h2d),
    .line_in(line_d2h), .out_payload(tx_payload), .out_valid(tx_valid));
  uart dev_uart(.clk(clk), .rst(rst), .rx_pin(line_h2d), .tx_pin(line_d2h),
    .rx__payload(u_rx_payload), .rx__valid(u_rx_valid), .rx__ready(u_rx_ready),
    .tx__payload(u_tx_payload), .tx__valid(u_tx_valid), .tx__ready(u_tx_ready),
    .framing_errors(uart_framing_errors), .rx_overflows(uart_rx_overflows));
"""
    sv = endpoint_sv.replace(f"module {top}(", f"module {top}_uart(", 1)
    dut = sv.index(f"  {role} dut(")
    sv = sv[:dut] + wiring + sv[dut:]
    for a, b in ((".rx__payload(rx_payload), .rx__valid(rx_valid), .rx__ready(rx_ready)",
                  ".rx__payload(u_rx_payload), .rx__valid(u_rx_valid), .rx__ready(u_rx_ready)"),
                 (".tx__payload(tx_payload), .tx__valid(tx_valid), .tx__ready(tx_ready)",
                  ".tx__payload(u_tx_payload), .tx__valid(u_tx_valid), .tx__ready(u_tx_ready)")):
        head, tail = sv[:dut + len(wiring)], sv[dut + len(wiring):]
        if a not in tail:
            raise ServeError(f"cannot insert the UART into the {role} test top (port list changed)")
        sv = head + tail.replace(a, b, 1)
    # the pump's tx_ready stays an unused output; tx_valid now comes from the host line
    return sv


def _build(role: str, cfg, uart: bool = False, divisor: int = DEFAULT_SIM_DIVISOR):
    """Build (cached) the served ``role`` top; with ``uart`` the host link crosses 8N1 lines."""
    from ..gateware.alice import AliceParams
    from ..gateware.bob import BobParams
    from .toolchain import build, link_pump_sv
    if role == "alice":
        from .alice import alice_verilog as verilog_of, alice_top_sv as top_of, TOPLEVEL, build_alice
        params = AliceParams.from_config(cfg.gateware)
        if not uart:
            return build_alice(params), TOPLEVEL
    elif role == "bob":
        from .bob import bob_verilog as verilog_of, bob_top_sv as top_of, TOPLEVEL, build_bob
        params = BobParams.from_config(cfg.gateware)
        if not uart:
            return build_bob(params), TOPLEVEL
    else:
        raise ValueError(f"role = {role!r}: must be 'alice' or 'bob'")
    clk_hz = cfg.gateware.clock_mhz * 1e6
    from importlib import resources
    sources = {f"{role}.v": verilog_of(params), "link_pump.sv": link_pump_sv(),
               "uart.v": _uart_verilog(clk_hz, clk_hz / divisor),
               "uart_host.sv": resources.files("qkdlink.cosim").joinpath("sv", "uart_host.sv").read_text(),
               f"{TOPLEVEL}_uart.sv": _uart_top_sv(role, TOPLEVEL, top_of(params), divisor)}
    tag = f"{role}-uart-s{params.samples_per_clock}p{params.slots_per_clock}"
    return build(tag, sources, f"{TOPLEVEL}_uart"), f"{TOPLEVEL}_uart"


def run_server(spec_path: Path) -> int:
    """Child process body: build (cached) and run the serving testbench until stopped."""
    from ..host.config import load_link_config
    from .toolchain import run_cocotb
    spec = json.loads(Path(spec_path).read_text())
    cfg = load_link_config(spec.get("config"))
    build_dir, top = _build(spec["role"], cfg, uart=spec.get("uart", False),
                            divisor=spec.get("divisor", DEFAULT_SIM_DIVISOR))
    plusargs = [f"+stim={spec['stim']}"] if spec.get("stim") else []
    run_cocotb(build_dir, top, MODULE, work_dir=Path(spec["work"]),
               env={"QKDLINK_SERVE_SPEC": str(spec_path)}, plusargs=plusargs)
    return 0


@contextmanager
def serving(role: str, config: str | None = None, *, transport: str = "pty", stim: str | None = None,
            work_dir: str | Path | None = None, start_timeout_s: float = 600.0, poll_cycles: int = 256,
            uart: bool = False, divisor: int = DEFAULT_SIM_DIVISOR):
    """Run the simulated ``role`` endpoint while the ``with`` body runs; yields its address.

    ``uart``: the host link crosses the device's 8N1 UART (hdl/uart.py) and a host-side line
    model, ``divisor`` clocks per bit, as on a board; otherwise bytes go straight in.
    """
    if uart and (not isinstance(divisor, int) or divisor < 4):
        raise ValueError(f"divisor = {divisor!r}: must be an integer >= 4 clocks per bit")
    if role not in ("alice", "bob"):
        raise ValueError(f"role = {role!r}: must be 'alice' or 'bob'")
    if transport not in ("pty", "unix"):
        raise ValueError(f"transport = {transport!r}: must be 'pty' or 'unix'")
    if stim is not None and role != "bob":
        raise ValueError("stim: only Bob has detector inputs to replay")
    with tempfile.TemporaryDirectory(prefix="qkdlink-serve-") as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        spec = {"role": role, "config": str(config) if config else None, "transport": transport,
                "address": str(Path(tmp) / "link.sock"), "ready": str(work / "ready.json"),
                "stop": str(work / "stop"), "parent_pid": None, "work": str(work),
                "stim": str(stim) if stim else None, "poll_cycles": int(poll_cycles),
                "uart": bool(uart), "divisor": int(divisor)}
        for name in ("ready.json", "stop", "stop.done"):
            (work / name).unlink(missing_ok=True)
        log = open(work / "serve.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "qkdlink.cosim.serve", "--child", str(work / "spec.json")],
                                stdout=log, stderr=subprocess.STDOUT)
        spec["parent_pid"] = proc.pid     # the simulator's parent is the child Python process
        (work / "spec.tmp").write_text(json.dumps(spec))
        (work / "spec.tmp").replace(work / "spec.json")      # the child waits for the whole file
        try:
            deadline = time.monotonic() + start_timeout_s
            ready = work / "ready.json"
            while not ready.exists():
                if proc.poll() is not None:
                    log.flush()
                    raise ServeError(f"the {role} simulator exited ({proc.returncode}) before serving; "
                                     f"log {work / 'serve.log'}:\n{(work / 'serve.log').read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise ServeError(f"the {role} simulator did not start within {start_timeout_s:g} s")
                time.sleep(0.05)
            yield json.loads(ready.read_text())["address"]
        finally:
            (work / "stop").write_text("stop\n")
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m qkdlink.cosim.serve")
    p.add_argument("--child", metavar="SPEC", required=True, help="internal: run the server from SPEC")
    args = p.parse_args(argv)
    # wait until the parent has written the spec (it needs our pid first)
    spec = Path(args.child)
    for _ in range(2000):
        if spec.exists():
            break
        time.sleep(0.005)
    return run_server(spec)


if __name__ == "__main__":
    sys.exit(main())
