"""``qkdlink build``: a bitstream for a dev board, with ``report.json`` (see docs/boards.md).

Registered on the main command line by ``add_parser(subparsers)``.
"""
from __future__ import annotations

import argparse
import json
import sys

from .build import DEFAULT_BAUD, BuildError, build_board, with_entropy_source
from .platforms import BOARDS

__all__ = ["add_parser", "cmd_build"]

EPILOG = """boards:
""" + "".join(f"  {b.name:<12} {b.title} ({b.device}), default S={b.samples_per_clock} P={b.slots_per_clock} "
              f"at {b.clock_mhz:g} MHz\n" for b in BOARDS.values()) + """
Alice built with gateware.entropy_source: prng (the default) is marked INSECURE_PRNG in the
bitstream name and the report; build with --entropy qrng (or entropy_source: qrng) for a
secure configuration. The iCEBreaker has room for Alice only with the QRNG input (--entropy qrng).

examples:
  qkdlink build --board ecpix5-85 --role alice --out build/alice-ecpix5 link.yaml
  qkdlink build --board icebreaker --role alice --entropy qrng --out build/alice-icebreaker
  qkdlink build --board icebreaker --role bob --out build/bob-icebreaker
  qkdlink build --board icebreaker --role alice --bringup --out build/bringup-ice --baud 1000000
"""


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return v


def cmd_build(args) -> int:
    """Build a bitstream for one endpoint on one board and write report.json next to it."""
    from ..host.config import load_link_config
    cfg = load_link_config(args.config)
    if args.entropy is not None:
        cfg = with_entropy_source(cfg, args.entropy)
    overrides = {k: getattr(args, k) for k in ("samples_per_clock", "slots_per_clock", "clock_mhz",
                                               "choice_depth_slots", "record_rows", "pending_depth")
                 if getattr(args, k) is not None}
    try:
        report = build_board(args.board, args.role, args.out, cfg, baud=args.baud, overrides=overrides,
                             bringup=args.bringup)
    except BuildError as e:
        print(f"qkdlink build: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"qkdlink build: {args.board}/{args.role}: {e}", file=sys.stderr)
        return 2
    if report["insecure"]:
        print("WARNING: built with the simulation PRNG (gateware.entropy_source: prng): NOT SECURE", file=sys.stderr)
    for dom, c in report.get("clocks", {}).items():
        print(f"clock {dom:<6} {c['achieved_mhz']:8.2f} MHz achieved, {c['constraint_mhz']:8.2f} MHz constrained")
    for name, r in report.get("resources", {}).items():
        print(f"{name:<7} {r['used']:>6} / {r['available']:<6}")
    print(f"{report['bitstream']} and report.json in {args.out} ({report['build_s']:.0f} s)")
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``build`` on the ``qkdlink`` subcommand parsers; returns its parser."""
    b = subparsers.add_parser(
        "build", help="build a bitstream for a dev board (YoWASP Yosys + nextpnr) with a timing/resource report",
        description=cmd_build.__doc__ + " Geometry, clock and memory sizes default to the board's values "
        "(see below); the rest comes from the config's gateware section. Exits 1 on a tool failure or a "
        "missed timing constraint, 2 on bad parameters.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("config", nargs="?", help="link YAML (default: the built-in config)")
    b.add_argument("--board", required=True, choices=sorted(BOARDS), help="target board")
    b.add_argument("--role", required=True, choices=("alice", "bob"), help="endpoint to build")
    b.add_argument("--out", required=True, metavar="DIR", help="output directory (bitstream, report.json, build/)")
    b.add_argument("--baud", type=_positive_int, default=DEFAULT_BAUD,
                   help=f"host-link UART baud rate (default {DEFAULT_BAUD}), 8N1")
    b.add_argument("--entropy", choices=("prng", "qrng"),
                   help="Alice's entropy source, overriding gateware.entropy_source of the config "
                        "(prng: simulation only, NOT secure; qrng: the QRNG serial input)")
    b.add_argument("--samples-per-clock", type=_positive_int, help="S, I/O samples per clock (board default)")
    b.add_argument("--slots-per-clock", type=_positive_int, help="P, pulse slots per clock (board default)")
    b.add_argument("--clock-mhz", type=float, help="system clock in MHz (board default)")
    b.add_argument("--choice-depth-slots", type=_positive_int, help="Alice's choice memory depth (board default)")
    b.add_argument("--record-rows", type=_positive_int, help="Bob's record FIFO rows (board default)")
    b.add_argument("--pending-depth", type=_positive_int, help="Bob's host-link pending-record depth (board default)")
    b.add_argument("--bringup", action="store_true",
                   help="build the bring-up design instead of the endpoint: same clock, pins, gearing and UART "
                        "(echo), test patterns on the outputs, no QKD logic (see docs/boards.md)")
    b.add_argument("--json", action="store_true", help="also print the report as JSON")
    b.set_defaults(func=cmd_build)
    return b
