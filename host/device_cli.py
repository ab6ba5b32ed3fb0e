"""``qkdlink device`` (talk to an endpoint over any transport) and ``qkdlink serve-sim``.

The same commands work against a board's UART (``--port /dev/ttyUSB1 --baud 115200``), a
pseudo-terminal bridged to the Verilated gateware (``qkdlink serve-sim`` prints its path) or
the co-simulation's socket (``--port unix:///tmp/alice.sock``).
"""
from __future__ import annotations

import json
import sys
import time

__all__ = ["add_parsers"]


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise SystemExit(f"qkdlink device: {text!r} is not an integer (decimal or 0x hex)") from None


def _reg(text: str):
    try:
        return int(text, 0)
    except ValueError:
        return text


def _configure(dev, config_path) -> list[tuple[int, int]]:
    from .config import load_link_config
    cfg = load_link_config(config_path)
    if dev.role == "alice":
        from ..cosim.alice_sequence import setup_writes
        from ..gateware.alice_model import AliceSettings
        writes = setup_writes(AliceSettings.from_config(cfg).as_dict())
    else:
        from ..cosim.bob_sequence import setup_writes
        from ..cosim.fulllink import bob_settings_from_config
        writes = setup_writes(bob_settings_from_config(cfg, cfg.gateware.prng_seed + 1).as_dict())
    for addr, value in writes:
        dev.write(addr, value)
    return writes


def cmd_device(args) -> int:
    """Configure an endpoint, start/stop it, read registers, counters and detection records."""
    from .driver import Device, DeviceError
    from .transport import TransportError, open_transport
    try:
        transport = open_transport(args.port, baud=args.baud)
    except TransportError as e:
        print(f"qkdlink device: {e}", file=sys.stderr)
        return 2
    out: dict = {}
    try:
        with transport:
            dev = Device(transport, timeout_s=args.timeout)
            a = args.action
            if a == "info":
                out = dev.identify()
            elif a == "read":
                values = dev.read(_reg(args.register), args.count)
                out = {"register": args.register, "values": values if isinstance(values, list) else [values]}
            elif a == "write":
                dev.write(_reg(args.register), _int(args.value))
                out = {"register": args.register, "written": _int(args.value)}
            elif a == "counters":
                out = dev.snapshot()
            elif a == "link-stats":
                out = dev.link_counters()
            elif a == "configure":
                out = {"role": dev.role, "writes": len(_configure(dev, args.config))}
            elif a == "start":
                if dev.role == "alice":
                    stop = 0 if args.slots is None else args.slots
                    dev.write("STOP_AT_SLOT_LO", stop & 0xFFFFFFFF)
                    dev.write("STOP_AT_SLOT_HI", stop >> 32)
                    dev.write("CTRL", dev.field_value("CTRL", RUN=1))
                else:
                    dev.write("CTRL", dev.field_value("CTRL", RUN=1, RECORDS=1))
                out = {"role": dev.role, "running": True}
            elif a == "stop":
                dev.write("CTRL", 0)
                out = {"role": dev.role, "running": False}
            elif a == "records":
                if dev.role != "bob":
                    raise DeviceError("records: only Bob sends detection records")
                recs = dev.records(max_records=args.count, timeout_s=args.wait)
                if args.out:
                    import numpy as np
                    np.save(args.out, recs)
                out = {"records": int(recs.size), "file": args.out}
            out["stale_answers"] = dev.stale_answers
    except (DeviceError, TransportError, KeyError, ValueError) as e:
        print(f"qkdlink device: {args.port}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:<28} {hex(v) if isinstance(v, int) and k in ('id',) else v}")
    return 0


def cmd_serve_sim(args) -> int:
    """Run a Verilated endpoint and serve its host link on a pseudo-terminal or Unix socket."""
    from ..cosim.serve import serving, ServeError
    from .config import ConfigError, load_link_config
    try:
        load_link_config(args.config)          # errors before anything is built
    except ConfigError as e:
        print(f"qkdlink serve-sim: {e}", file=sys.stderr)
        return 2
    print(f"qkdlink serve-sim: building/starting the {args.role} simulator ...", file=sys.stderr)
    try:
        with serving(args.role, args.config, transport=args.transport, stim=args.stim,
                     uart=args.uart, divisor=args.divisor) as address:
            print(address, flush=True)
            print(f"qkdlink serve-sim: {args.role} host link at {address}; Ctrl-C stops", file=sys.stderr)
            deadline = None if args.seconds is None else time.monotonic() + args.seconds
            try:
                while deadline is None or time.monotonic() < deadline:
                    time.sleep(0.2)
            except KeyboardInterrupt:
                pass
    except (ServeError, ValueError) as e:
        print(f"qkdlink serve-sim: {e}", file=sys.stderr)
        return 1
    return 0


def add_parsers(sub) -> None:
    d = sub.add_parser("device", help="talk to an endpoint (board UART, pty to the simulator, or socket)",
                       description=cmd_device.__doc__)
    d.add_argument("--port", required=True, help="serial device path, serial://PATH?baud=N, tcp://HOST:PORT "
                   "or unix://PATH")
    d.add_argument("--baud", type=int, default=None, help="baud rate of a serial port (default 115200)")
    d.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each answer")
    d.add_argument("--json", action="store_true", help="print JSON")
    acts = d.add_subparsers(dest="action", required=True)
    acts.add_parser("info", help="role, register map version, build parameters")
    r = acts.add_parser("read", help="read registers")
    r.add_argument("register", help="register name or address")
    r.add_argument("count", nargs="?", type=int, default=1)
    w = acts.add_parser("write", help="write a register")
    w.add_argument("register")
    w.add_argument("value")
    acts.add_parser("counters", help="snapshot and read every SNAP_* counter")
    acts.add_parser("link-stats", help="host-link statistics (frames, CRC errors, ...)")
    c = acts.add_parser("configure", help="load the run-time settings of a link config")
    c.add_argument("config", nargs="?", default=None)
    s = acts.add_parser("start", help="start emitting (Alice) or tagging + records (Bob)")
    s.add_argument("--slots", type=int, default=None, help="Alice: stop at this slot (default: run on)")
    acts.add_parser("stop", help="clear CTRL (stop)")
    rec = acts.add_parser("records", help="collect Bob's detection records")
    rec.add_argument("--count", type=int, default=None, help="stop after this many records")
    rec.add_argument("--wait", type=float, default=1.0, help="seconds to collect")
    rec.add_argument("--out", default=None, help="save the records (uint64 .npy)")
    d.set_defaults(func=cmd_device)

    v = sub.add_parser("serve-sim", help="serve a Verilated endpoint on a pseudo-terminal (or Unix socket)",
                       description=cmd_serve_sim.__doc__)
    v.add_argument("config", nargs="?", default=None, help="link config YAML (default: built-in)")
    v.add_argument("--role", choices=("alice", "bob"), required=True)
    v.add_argument("--transport", choices=("pty", "unix"), default="pty")
    v.add_argument("--uart", action="store_true", help="put the device's 8N1 UART (hdl/uart.py) and a "
                   "host-side serial line into the host link, as on a board")
    v.add_argument("--divisor", type=int, default=16, help="with --uart: clocks per bit (default 16)")
    v.add_argument("--stim", default=None, help="Bob: detector/sync event file to replay (cosim/bob.py format)")
    v.add_argument("--seconds", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    v.set_defaults(func=cmd_serve_sim)
