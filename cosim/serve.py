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


def _build(role: str, cfg):
    from ..gateware.alice import AliceParams
    from ..gateware.bob import BobParams
    if role == "alice":
        from .alice import build_alice, TOPLEVEL
        return build_alice(AliceParams.from_config(cfg.gateware)), TOPLEVEL
    if role == "bob":
        from .bob import build_bob, TOPLEVEL
        return build_bob(BobParams.from_config(cfg.gateware)), TOPLEVEL
    raise ValueError(f"role = {role!r}: must be 'alice' or 'bob'")


def run_server(spec_path: Path) -> int:
    """Child process body: build (cached) and run the serving testbench until stopped."""
    from ..host.config import load_link_config
    from .toolchain import run_cocotb
    spec = json.loads(Path(spec_path).read_text())
    cfg = load_link_config(spec.get("config"))
    build_dir, top = _build(spec["role"], cfg)
    plusargs = [f"+stim={spec['stim']}"] if spec.get("stim") else []
    run_cocotb(build_dir, top, MODULE, work_dir=Path(spec["work"]),
               env={"QKDLINK_SERVE_SPEC": str(spec_path)}, plusargs=plusargs)
    return 0


@contextmanager
def serving(role: str, config: str | None = None, *, transport: str = "pty", stim: str | None = None,
            work_dir: str | Path | None = None, start_timeout_s: float = 600.0, poll_cycles: int = 256):
    """Run the simulated ``role`` endpoint while the ``with`` body runs; yields its address."""
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
                "stim": str(stim) if stim else None, "poll_cycles": int(poll_cycles)}
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
