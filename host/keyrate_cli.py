"""``qkdlink keyrate``: secret key rate versus distance for a link config (``host/theory.py``).

Registered on the main command line by ``add_parser(subparsers)``; see ``docs/keyrate.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from . import theory
from .config import ConfigError, load_link_config

__all__ = ["add_parser", "cmd_keyrate", "parse_distance_range", "MAX_POINTS"]

#: Largest number of distances one call evaluates.
MAX_POINTS = 10_001
_MAX_KM = 5000.0          # the range of channel.length_km

EPILOG = """methods:
  gllp-decoy         asymptotic GLLP rate with exact single-photon gain/error (infinitely many decoys)
  vacuum-weak-decoy  asymptotic vacuum + weak decoy bounds (Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005))
  finite-lim2014     finite key with two decoys (Lim et al., PRA 89, 022307 (2014)); the block is
                     postprocessing.block_bits key-basis detections
  no-decoy           GLLP without decoys, every multi-photon pulse tagged (needs --optimise: mu ~ eta)
  plob               repeaterless bound -log2(1 - eta) (Pirandola et al. 2017)

examples:
  qkdlink keyrate --method vacuum-weak-decoy --distance-km 0:200:10
  qkdlink keyrate link.yaml --method finite-lim2014 --distance-km 20:140:20 --optimise --json rates.json
  qkdlink keyrate --method no-decoy --distance-km 0:60:5 --optimise
"""


def parse_distance_range(text: str) -> np.ndarray:
    """``START:STOP:STEP`` (km, STOP included when on the grid) or one distance ``D`` -> array.

    Raises ``argparse.ArgumentTypeError`` saying what is wrong and what is allowed.
    """
    form = "use START:STOP:STEP in km, e.g. 0:200:10, or one distance"
    parts = str(text).strip().split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a distance range; {form}") from None
    if len(values) == 1:
        values = [values[0], values[0], 1.0]
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} has {len(values)} fields; {form}")
    start, stop, step = values
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: distances must be finite numbers")
    if not 0.0 <= start <= _MAX_KM or not 0.0 <= stop <= _MAX_KM:
        raise argparse.ArgumentTypeError(f"{text!r}: START and STOP must be in [0, {_MAX_KM:g}] km")
    if stop < start:
        raise argparse.ArgumentTypeError(f"{text!r}: STOP = {stop:g} km is below START = {start:g} km")
    if step <= 0.0:
        raise argparse.ArgumentTypeError(f"{text!r}: STEP = {step:g} km must be positive")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    if n > MAX_POINTS:
        raise argparse.ArgumentTypeError(f"{text!r} gives {n:,} distances; at most {MAX_POINTS:,} (use a larger STEP)")
    return start + step * np.arange(n)


def _finite_or_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _fmt_bps(bps: float) -> str:
    for unit, div in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= div:
            return f"{bps / div:.3g} {unit}"
    return f"{bps:.3g} bit/s"


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        print(f"\rqkdlink: optimising {done}/{total}", end="" if done < total else "\n", file=sys.stderr)


def cmd_keyrate(args) -> int:
    """Secret key rate versus fibre length for a link config, and the maximum distance."""
    distances = args.distance_km
    if isinstance(distances, str):
        try:
            distances = parse_distance_range(distances)
        except argparse.ArgumentTypeError as e:
            print(f"qkdlink: --distance-km: {e}", file=sys.stderr)
            return 2
    if not 1.0 <= args.f_ec <= 3.0:
        print(f"qkdlink: --f-ec = {args.f_ec:g}: must be in [1, 3]", file=sys.stderr)
        return 2
    cfg = load_link_config(args.config)
    method = args.method
    link = theory.link_from_config(cfg, n_detectors=args.detectors, f_ec=args.f_ec)
    settings = theory.settings_from_config(cfg)
    try:
        rows = theory.keyrate_table(cfg, method, distances, optimise=args.optimise, n_detectors=args.detectors,
                                    f_ec=args.f_ec, progress=_progress if args.optimise else None)
        dmax = theory.max_distance_km(method, link, settings, optimise=args.optimise)
    except ValueError as e:          # settings a method cannot use, e.g. mu_decoy >= mu_signal - mu_vacuum
        raise ConfigError(f"{args.config or '<built-in defaults>'}: {method}: {e}") from None

    pulse_mhz = cfg.gateware.pulse_rate_mhz
    print(f"qkdlink keyrate: {method} -- {theory.METHOD_SOURCES[method]}")
    print(f"config {args.config or '<built-in defaults>'}: pulse rate {pulse_mhz:g} MHz, "
          f"{cfg.channel.loss_db_per_km:g} dB/km + {cfg.channel.connector_loss_db:g} dB, "
          f"eta_Bob {cfg.detectors.efficiency:g}, Y0 {link.y0:.3g} ({args.detectors} x "
          f"{cfg.detectors.dark_count_per_gate:g} dark/gate), e_d {link.e_detector:g}, f {link.f_ec:g}"
          + ("" if args.optimise or method in ("plob",) else
             f", mu {settings.mu_signal:g}/{settings.mu_decoy:g}/{settings.mu_vacuum:g}"))
    extra = []
    if args.optimise and method != "plob":
        extra = [k for k in ("mu_signal", "mu_decoy", "p_signal", "p_decoy", "p_z_basis") if k in rows[0]]
        if method == "no-decoy":
            extra = ["mu_signal"]
    if method == "finite-lim2014":
        extra.append("block_time_s")
    head = (f"{'km':>7} {'loss dB':>7} {'eta':>10} {'QBER':>7} {'key/pulse':>10} {'key bit/s':>10} "
            f"{'':>14} {'PLOB/pulse':>10}" + "".join(f" {k:>12}" for k in extra))
    print(head)
    for r in rows:
        line = (f"{r['distance_km']:>7.1f} {r['loss_db']:>7.2f} {r['eta']:>10.3e} {r['qber']:>7.4f} "
                f"{r['rate_per_pulse']:>10.3e} {r['rate_bps']:>10.3e} {('(' + _fmt_bps(r['rate_bps']) + ')'):>14} "
                f"{r['plob_per_pulse']:>10.3e}")
        for k in extra:
            v = r.get(k)
            line += f" {'-':>12}" if v is None else (f" {v:>12.4g}")
        print(line)
    if math.isinf(dmax):
        print("max distance: unbounded" + (" (the bound is positive for any eta > 0)" if method == "plob" else
                                           " within 5000 km"))
    elif dmax == 0.0:
        print("max distance: 0 km -- no secret key at any distance with these settings"
              + ("" if args.optimise else " (try --optimise)"))
    else:
        print(f"max distance: {dmax:.2f} km" + (" (settings optimised at each distance)" if args.optimise else ""))

    if args.json:
        out = {"method": method, "source": theory.METHOD_SOURCES[method],
               "config": str(args.config) if args.config else None, "pulse_rate_mhz": pulse_mhz,
               "optimise": bool(args.optimise), "f_ec": link.f_ec, "n_detectors": args.detectors, "y0": link.y0,
               "rates": [{k: _finite_or_none(v) for k, v in r.items()} for r in rows],
               "max_distance_km": None if math.isinf(dmax) else dmax,
               "max_distance_unbounded": math.isinf(dmax)}
        Path(args.json).write_text(json.dumps(out, indent=2, allow_nan=False) + "\n")
        print(f"qkdlink: rates written to {args.json}", file=sys.stderr)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``keyrate`` on the ``qkdlink`` subcommand parsers; returns its parser."""
    k = subparsers.add_parser(
        "keyrate", help="secret key rate vs distance (decoy BB84 theory) and the maximum distance",
        description=cmd_keyrate.__doc__ + " Rates are secret bits per sent pulse and bit/s at the config's "
        "pulse rate (gateware.pulse_rate_mhz), from the channel, detector, source and post-processing "
        "sections of the config. Dead time and afterpulsing are not modelled.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("config", nargs="?", help="link YAML (default: the built-in 65 km hop)")
    k.add_argument("--method", choices=theory.METHODS, default="vacuum-weak-decoy",
                   help="key rate formula (default vacuum-weak-decoy); see below")
    k.add_argument("--distance-km", type=parse_distance_range, default=parse_distance_range("0:200:10"),
                   metavar="START:STOP:STEP", help="fibre lengths in km, STOP included (default 0:200:10)")
    k.add_argument("--optimise", "--optimize", action="store_true",
                   help="optimise intensities (and, for finite-lim2014, probabilities and basis bias) at each "
                        "distance instead of using the config's source section")
    k.add_argument("--detectors", type=int, choices=(2, 4), default=4,
                   help="gated detectors counted in the background yield Y0 = 1-(1-dark)^N: 4 for our passive "
                        "receiver (default), 2 for an active-basis receiver")
    k.add_argument("--f-ec", type=float, default=theory.DEFAULT_F_EC, metavar="F",
                   help=f"error-correction inefficiency f >= 1 (default {theory.DEFAULT_F_EC}, Lim et al. 2014)")
    k.add_argument("--json", metavar="FILE", help="write the table and max distance as JSON")
    k.set_defaults(func=cmd_keyrate)
    return k
