"""Fmax and resources of the full-rate board builds, JSON out.

Targets: iCE40UP5K (iCEBreaker) system clock >= 48 MHz; ECP5-85F (ECPIX-5, speed grade 8)
>= 156.25 MHz with P = 4 (625 MHz pulse rate), each board at its default (full-rate)
parameters but constrained at the target clock (the iCEBreaker's default clock is 24 MHz, what
its endpoints meet today; its Alice is built QRNG-only, the PRNG does not fit the UP5K).
Baseline, measured in the same run: the board's bring-up design (same PLL,
gearing and UART, no endpoint logic), i.e. what the board infrastructure alone reaches.
Each endpoint build runs the whole YoWASP flow (minutes of CPU); a build that fails (does
not fit, misses timing, tool error) is reported with its error. `tool_cpu_s` is the CPU time
of the tools.

    .venv/bin/python benchmarks/boards_fmax.py [--boards icebreaker,ecpix5-85] [--roles alice,bob] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from qkdlink.boards.build import BuildError, build_board, with_entropy_source
from qkdlink.boards.platforms import get_board
from qkdlink.host.config import default_link_config

TARGET_MHZ = {"icebreaker": 48.0, "ecpix5-85": 156.25}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boards", default="icebreaker,ecpix5-85")
    ap.add_argument("--roles", default="alice,bob")
    ap.add_argument("--out", help="keep the builds here (default: a temporary directory)")
    args = ap.parse_args(argv)
    cfg = default_link_config()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        for board in args.boards.split(","):
            for role, bringup in [(r, True) for r in args.roles.split(",")[:1]] + [(r, False) for r in args.roles.split(",")]:
                t0 = time.monotonic()
                out = root / f"{board}-{role}{'-bringup' if bringup else ''}"
                entry = {"board": board, "role": role, "design": "bring-up baseline" if bringup else "endpoint",
                         "target_mhz": TARGET_MHZ.get(board)}
                # the UP5K Alice is QRNG-only (the PRNG does not fit)
                board_cfg = cfg if get_board(board).prng_fits else with_entropy_source(cfg, "qrng")
                try:
                    # constrained at the target (the board default may be lower: iCEBreaker 24 MHz)
                    rep = build_board(board, role, out, board_cfg, bringup=bringup,
                                      overrides={"clock_mhz": TARGET_MHZ[board]})
                    entry["ok"] = True
                except BuildError as e:
                    entry["ok"] = False
                    entry["error"] = str(e).splitlines()[0]
                    rep_path = out / "report.json"
                    rep = json.loads(rep_path.read_text()) if rep_path.exists() else {}
                entry["wall_s"] = round(time.monotonic() - t0, 1)
                for k in ("gateware", "clock_mhz_pll", "pulse_rate_mhz", "clocks", "resources", "insecure",
                          "tool_cpu_s", "does_not_fit"):
                    if k in rep:
                        entry[k] = rep[k]
                results.append(entry)
                print(json.dumps(entry), file=sys.stderr)
    print(json.dumps({"benchmark": "boards_fmax", "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
