"""``qkdlink plot-distance``: the full-link co-simulation at several fibre lengths, measured
gain and QBER per intensity class against the analytic expectation, as a PNG and a JSON file.

Each distance is one :func:`qkdlink.cosim.fulllink.run_full_link` (Alice and Bob gateware,
channel model, hardware sifting) with the config's ``channel.length_km`` replaced. The plot
shows the measured values with 3-sigma binomial error bars (sigma from the expected value and
the measured trials, as in the run's report) over the analytic curve
(:func:`qkdlink.cosim.channel.expectations.expected_statistics`) evaluated on a fine grid.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from .config import link_config_from_dict, load_link_config
from .keyrate_cli import parse_distance_range

__all__ = ["add_parser", "cmd_plot_distance", "run_distance_sweep", "plot_distance_sweep", "MAX_DISTANCES"]

#: Largest number of distances (one full co-simulation each) per call.
MAX_DISTANCES = 40
MIN_SIFTED_PLOTTED = 10     # a QBER of fewer sifted bits is not plotted (its 3-sigma bar spans [0, 1])
COLOURS = {"signal": "tab:red", "decoy": "tab:blue", "vacuum": "tab:green"}


def config_at_length(cfg, length_km: float, source: str = "<built-in defaults>"):
    """``cfg`` with ``channel.length_km`` replaced (checked like a config file's value)."""
    d = cfg.to_dict()
    d["channel"]["length_km"] = float(length_km)
    return link_config_from_dict(d, f"{source} (--distance-km {length_km:g})")


def run_distance_sweep(cfg, distances_km, *, slots: int, seed: int, channel_options: dict | None = None,
                       progress: bool = False, source: str = "<built-in defaults>") -> dict:
    """One full-link co-simulation per distance; returns the data written as JSON."""
    from ..cosim.fulllink import run_full_link
    cfgs = [config_at_length(cfg, d, source) for d in distances_km]    # every length checked first
    points = []
    for d, c in zip(distances_km, cfgs):
        if progress:
            print(f"qkdlink: {d:g} km ...", file=sys.stderr)
        r = run_full_link(c, slots=slots, seed=seed, channel_options=channel_options, progress=progress)
        points.append({"distance_km": float(d),
                       **{k: v for k, v in r.items() if not k.endswith("_key")}})
    return {"slots": int(points[0]["slots"]) if points else slots, "seed": seed, "config": cfg.to_dict(),
            "points": points}


def plot_distance_sweep(data: dict, cfg, out: Path, *, channel_options: dict | None = None) -> None:
    """Measured gain (log) and QBER per class with 3-sigma bars over the analytic curves."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..cosim.channel.expectations import expected_statistics

    pts = data["points"]
    x = np.array([p["distance_km"] for p in pts])
    lo, hi = float(x.min()), float(x.max())
    fine = np.linspace(lo, hi if hi > lo else lo + 1.0, 61)
    eve = (channel_options or {}).get("eve")
    curves = {n: ([], []) for n in COLOURS}
    for d in fine:
        e = expected_statistics(config_at_length(cfg, d), eve=eve)
        for n in COLOURS:
            curves[n][0].append(e[n].expected_gain)
            curves[n][1].append(e[n].expected_qber)

    fig, (ax_g, ax_q) = plt.subplots(1, 2, figsize=(12, 4.8))
    for n, colour in COLOURS.items():
        c = [p["classes"][n] for p in pts]
        gain = np.array([v["gain"] for v in c])
        sg = np.array([3 * v["sigma_gain"] for v in c])
        pos = gain > 0
        ax_g.plot(fine, curves[n][0], color=colour, lw=1, label=f"{n} expected")
        ax_g.errorbar(x[pos], gain[pos], yerr=np.minimum(sg[pos], gain[pos] * 0.999), fmt="o", color=colour,
                      ms=4, capsize=3, label=f"{n} measured (3 sigma)")
        qber = np.array([v["qber"] for v in c])
        sq = np.array([3 * v["sigma_qber"] for v in c])
        has = np.array([v["sifted"] >= MIN_SIFTED_PLOTTED and math.isfinite(v["sigma_qber"]) for v in c])
        ax_q.plot(fine, curves[n][1], color=colour, lw=1, label=f"{n} expected")
        ax_q.errorbar(x[has], qber[has], yerr=[np.minimum(sq[has], qber[has]), sq[has]], fmt="o", color=colour,
                      ms=4, capsize=3, label=f"{n} measured (3 sigma)")
    ax_g.set_yscale("log")
    ax_g.set_xlabel("fibre length (km)")
    ax_g.set_ylabel("gain (detections per slot)")
    ax_g.set_title(f"gain, gateware co-simulation, {data['slots']:,} slots per point")
    ax_q.set_xlabel("fibre length (km)")
    ax_q.set_ylabel("QBER of the hardware-sifted key")
    ax_q.set_ylim(0, 0.6)
    ax_q.set_title(f"QBER (points with >= {MIN_SIFTED_PLOTTED} sifted bits)")
    for ax in (ax_g, ax_q):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def cmd_plot_distance(args) -> int:
    """Full-link co-simulation at several fibre lengths; measured vs expected gain and QBER."""
    from .cli import UsageError, channel_options_from_args
    cfg = load_link_config(args.config)
    source = str(args.config) if args.config else "<built-in defaults>"
    try:
        distances = parse_distance_range(args.distance_km)
    except argparse.ArgumentTypeError as e:
        raise UsageError(f"--distance-km: {e}") from None
    if distances.size > MAX_DISTANCES:
        raise UsageError(f"--distance-km {args.distance_km!r}: {distances.size} distances, at most "
                         f"{MAX_DISTANCES} (one co-simulation each)")
    args.satellite, args.pass_time_s = False, None
    options = channel_options_from_args(args, cfg)
    for d in distances:                  # the lengths are checked before anything is built
        config_at_length(cfg, d, source)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {args.out!r}: must end in .png")
    js = Path(args.json) if args.json else out.with_suffix(".json")
    seed = cfg.gateware.prng_seed if args.seed is None else args.seed
    print(f"qkdlink: plot-distance, {distances.size} distances ({', '.join(f'{d:g}' for d in distances)} km), "
          f"{args.slots:,} slots each, seed {seed}", file=sys.stderr)
    t0 = time.perf_counter()
    data = run_distance_sweep(cfg, distances, slots=args.slots, seed=seed, channel_options=options,
                              progress=not args.quiet, source=source)
    data["wall_s"] = time.perf_counter() - t0
    data["channel"] = data["points"][0]["channel"]
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_distance_sweep(data, cfg, out, channel_options=options)
    js.write_text(json.dumps(data, indent=2, default=float) + "\n")
    print(f"{'km':>6} {'class':<7}{'gain':>11}{'expected':>11}{'3 sigma':>10}{'qber':>8}{'expected':>9}")
    agree = True
    for p in data["points"]:
        for n, v in p["classes"].items():
            print(f"{p['distance_km']:>6g} {n:<7}{v['gain']:>11.3e}{v['expected_gain']:>11.3e}"
                  f"{3 * v['sigma_gain']:>10.1e}{v['qber']:>8.4f}{v['expected_qber']:>9.4f}")
        agree &= bool(p["model_agreement"])
    print(f"qkdlink: plot {out}, data {js} ({data['wall_s']:.0f} s)", file=sys.stderr)
    return 0 if agree else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "plot-distance", help="full-link co-simulation vs fibre length: measured vs expected gain and QBER plot",
        description=cmd_plot_distance.__doc__ + " One co-simulation per distance; writes a PNG and the data "
        "as JSON (by default next to the PNG).")
    p.add_argument("config", nargs="?", help="link YAML (default: the built-in 65 km hop)")
    p.add_argument("--distance-km", default="0:150:25", metavar="START:STOP:STEP",
                   help="fibre lengths (default 0:150:25), or one distance")
    from .cli import _positive_int
    p.add_argument("--slots", type=_positive_int, default=1_000_000, help="slots per distance (default 1e6)")
    p.add_argument("--seed", type=int, help="seed (default: gateware.prng_seed of the config)")
    p.add_argument("--eve", metavar="ATTACK", help="as for `qkdlink sim` (pns: tuned once, to the config's own length)")
    p.add_argument("--clock-offset-ppm", metavar="X", help="as for `qkdlink sim`")
    p.add_argument("--out", default="plot-distance.png", metavar="PNG", help="plot file (default plot-distance.png)")
    p.add_argument("--json", metavar="FILE", help="data file (default: the PNG's name with .json)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_plot_distance)
    return p


if __name__ == "__main__":      # pragma: no cover
    from .cli import main
    sys.exit(main(["plot-distance", *sys.argv[1:]]))
