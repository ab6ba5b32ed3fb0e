"""The ``qkdlink`` command line: one command, subcommands for each job.

Run ``qkdlink --help`` or ``qkdlink COMMAND --help``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, load_link_config, field_table

__all__ = ["main"]

EPILOG = """examples:
  qkdlink cosim-tx                      co-simulate the transmitter on the built-in 65 km hop config
  qkdlink cosim-tx link.yaml --slots 2000000 --json tx.json
  qkdlink cosim-link                    Alice + Bob gateware, ideal channel, hardware sifting
  qkdlink sim --slots 2000000 --json run.json
                                        full link: gateware + physical channel model + sifting
  qkdlink sim --eve intercept-resend:0.5 --clock-offset-ppm 2 --json run.json
  qkdlink plot-distance --distance-km 0:150:25 --slots 1e6 --out plot.png
                                        measured vs expected gain and QBER over fibre length
  qkdlink distill run.json              distill a sim output into final keys (ledger printed)
  qkdlink serve-sim --role alice --uart  serve a Verilated endpoint on a pseudo-terminal
  qkdlink device --port /dev/pts/3 counters
                                        the same commands work over a board's serial port
  qkdlink build --board ecpix5-85 --role bob --out build/bob
                                        bitstream + report.json (Fmax, resources)
  qkdlink verilog --role alice --out build/alice
  qkdlink keyrate --method vacuum-weak-decoy --distance-km 0:200:10
                                        secret key rate vs distance, and the maximum distance
  qkdlink config show                   print the built-in defaults as YAML
  qkdlink config check link.yaml        validate a config file
  qkdlink regmap --role alice           the register map as a Markdown table
"""


class UsageError(Exception):
    """A command-line argument is wrong; the message says which and why."""


def _positive_int(text: str) -> int:
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _params_and_settings(cfg):
    from ..gateware.alice import AliceParams
    from ..gateware.alice_model import AliceSettings
    return AliceParams.from_config(cfg.gateware), AliceSettings.from_config(cfg)


def cmd_cosim_tx(args) -> int:
    """Co-simulate the transmitter gateware under Verilator and check it against the model."""
    from ..cosim.alice import run_alice_cosim, sent_statistics
    cfg = load_link_config(args.config)
    params, settings = _params_and_settings(cfg)
    if args.seed is not None:
        settings = type(settings)(**{**settings.as_dict(), "seed": args.seed})
    P = params.slots_per_clock
    clocks = -(-args.slots // P)
    n_bursts = max(1, min(args.batches, clocks))
    bursts = [clocks // n_bursts + (1 if i < clocks % n_bursts else 0) for i in range(n_bursts)]
    print(f"qkdlink: transmitter co-simulation, S={params.samples_per_clock} samples/clock, "
          f"P={P} slots/clock, {clocks * P:,} slots in {n_bursts} batches, seed {settings.seed}",
          file=sys.stderr)
    print("qkdlink: building (cached by design hash) and running under Verilator ...", file=sys.stderr)
    report = run_alice_cosim(params, settings, bursts, waves=args.waves,
                             work_dir=Path(args.work_dir) if args.work_dir else None,
                             progress=not args.quiet)
    stats = sent_statistics(report)
    g, s = cfg.gateware, cfg.source
    out = {k: v for k, v in report.items() if k not in ("codes",)}
    out["statistics"] = stats
    out["pulse_rate_mhz"] = g.pulse_rate_mhz
    lines = [
        f"slots emitted        {stats['slots']:>14,}   (blank {stats['blank']:,})",
        f"co-simulation speed  {report['slots_per_s']:>14,.0f} slots/s  (build {report['build_s']:.1f} s, model {report['model_s']:.1f} s)",
        f"model agreement      {'bit-exact' if report['model_agreement'] else 'MISMATCH':>14}   "
        f"({report['bursts']} snapshots x {len(report['final'])} values, {report['choice_answers_checked']} choice-memory answers)",
        f"Z basis fraction     {stats['z_fraction']:>14.5f}   (programmed {s.p_z_basis:.5f})",
        f"bit value 1 fraction {stats['bit_one_fraction']:>14.5f}   (expected 0.50000)",
    ]
    for name, prog in (("signal", s.p_signal), ("decoy", s.p_decoy), ("vacuum", s.p_vacuum)):
        c = stats["classes"][name]
        lines.append(f"{name:<7} Z {c['Z']:>12,} X {c['X']:>12,}   fraction {c['fraction']:.5f} (programmed {prog:.5f})")
    print("\n".join(lines))
    for m in report["mismatches"][:20]:
        print(f"  mismatch: {m}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=int) + "\n")
        print(f"qkdlink: report written to {args.json}", file=sys.stderr)
    return 0 if report["model_agreement"] else 1


WAVES_MAX_SLOTS = 20_000      # the VCD of the full link: ~14 MB for 2,000 slots (setup and sifting included)


def _float_in(option: str, text: str, lo: float, hi: float, unit: str = "") -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: not a number") from None
    if not (lo <= value <= hi):
        raise UsageError(f"{option} {text!r}: must be in [{lo:g}, {hi:g}]{' ' + unit if unit else ''}")
    return value


def channel_options_from_args(args, cfg) -> dict:
    """The ``--eve``, ``--clock-offset-ppm``, ``--satellite`` / ``--pass-time-s`` options of
    ``qkdlink sim`` as :class:`~qkdlink.cosim.channel.Channel` keyword arguments, checked
    (UsageError naming the option) before anything is built."""
    from ..cosim.channel import Channel
    from ..cosim.channel.eve import BeamSplitting, InterceptResend
    from ..cosim.channel.expectations import pns_preserving_signal_gain
    from ..cosim.channel.freespace import SatellitePass
    options = {}
    if args.clock_offset_ppm is not None:
        options["clock_offset_ppm"] = _float_in("--clock-offset-ppm", args.clock_offset_ppm, -1000.0, 1000.0, "ppm")
    if args.pass_time_s is not None and not args.satellite:
        raise UsageError("--pass-time-s: only with --satellite")
    if args.satellite:
        sat = SatellitePass()
        half = sat.visible_half_width_s()
        options["downlink"] = sat
        t = "0" if args.pass_time_s is None else args.pass_time_s
        options["pass_time_s"] = _float_in("--pass-time-s", t, -half, half,
                                           f"s (the satellite is above {sat.min_elevation_deg:g} deg elevation)")
    if args.eve:
        kind, _, arg = args.eve.partition(":")
        if kind == "intercept-resend":
            fraction = _float_in("--eve intercept-resend:FRACTION", arg, 0.0, 1.0) if arg else 1.0
            options["eve"] = InterceptResend(fraction=fraction)
        elif kind in ("pns", "beam-splitting") and not arg:
            if kind == "beam-splitting":
                options["eve"] = BeamSplitting()
            else:
                eta = float(options["downlink"].transmittance(options["pass_time_s"])) if args.satellite else None
                try:
                    options["eve"] = pns_preserving_signal_gain(cfg, transmittance=eta)
                except ValueError as e:
                    raise UsageError(f"--eve pns: {e}") from None
        else:
            raise UsageError(f"--eve {args.eve!r}: must be intercept-resend[:FRACTION], pns or beam-splitting")
    try:
        Channel(cfg, seed=0, **options)
    except ValueError as e:
        raise UsageError(f"channel options: {e}") from None
    return options


def cmd_sim(args) -> int:
    """Co-simulate the full link: Alice and Bob gateware with the physical channel model between."""
    import numpy as np
    from ..cosim.fulllink import run_full_link
    cfg = load_link_config(args.config)
    options = channel_options_from_args(args, cfg)
    if args.waves and args.slots > WAVES_MAX_SLOTS:
        raise UsageError(f"--waves with --slots {args.slots}: at most {WAVES_MAX_SLOTS:,} slots (the VCD "
                         "holds every signal of both ends at every clock)")
    work_dir = Path(args.work_dir) if args.work_dir else None
    if args.waves and work_dir is None:
        work_dir = Path(args.json).with_suffix(".work") if args.json else Path("qkdlink-sim-work")
    seed = cfg.gateware.prng_seed if args.seed is None else args.seed
    g, c = cfg.gateware, cfg.channel
    path = "satellite downlink (Micius-like)" if "downlink" in options else \
        f"{c.length_km:g} km at {c.loss_db_per_km:g} dB/km"
    print(f"qkdlink: full-link co-simulation, {path}, "
          f"{g.pulse_rate_mhz:g} MHz pulses (S={g.samples_per_clock}, P={g.slots_per_clock}), "
          f"{args.slots:,} slots, seed {seed}", file=sys.stderr)
    print("qkdlink: channel model, Verilator build (cached"
          + (", with tracing" if args.waves else "") + ") and run ...", file=sys.stderr)
    r = run_full_link(cfg, slots=args.slots, seed=seed, channel_options=options, progress=not args.quiet,
                      waves=args.waves, work_dir=work_dir)
    ch = r["channel"]
    if ch["eve"]:
        print("eve: " + ", ".join(f"{k} {v}" for k, v in ch["eve"].items()))
    if ch["satellite"]:
        s = ch["satellite"]
        print(f"satellite: t = {ch['pass_time_s']:g} s from culmination, range {s['range_km']:.0f} km, "
              f"elevation {s['elevation_deg']:.1f} deg, loss {s['loss_db']:.1f} dB"
              + (f"  [unconfirmed: {s['unconfirmed']}]" if "unconfirmed" in s else ""))
    if ch["clock_offset_ppm"]:
        print(f"clock offset: Bob {ch['clock_offset_ppm']:+g} ppm")
    print(f"slots {r['slots']:,}  co-simulation {r['slots_per_s']:,.0f} slots/s  "
          f"model agreement {'bit-exact' if r['model_agreement'] else 'MISMATCH'}  "
          f"transmittance {r['transmittance']:.3e}")
    print(f"records {r['records_produced']:,} produced, {r['records_dropped']:,} dropped (record FIFO full), "
          f"{r['sift_lost']:,} answered LOST (choice memory overrun)")
    print(f"{'class':<8}{'sent':>10}{'detected':>10}{'sifted':>8}{'errors':>8}"
          f"{'gain':>11}{'expected':>11}{'3 sigma':>10}{'qber':>8}{'expected':>9}{'3 sigma':>9}")
    for name, v in r["classes"].items():
        print(f"{name:<8}{v['sent']:>10,}{v['detected']:>10,}{v['sifted']:>8,}{v['errors']:>8,}"
              f"{v['gain']:>11.3e}{v['expected_gain']:>11.3e}{3 * v['sigma_gain']:>10.1e}"
              f"{v['qber']:>8.4f}{v['expected_qber']:>9.4f}{3 * v['sigma_qber']:>9.4f}")
    for m in r["mismatches"]:
        print(f"  mismatch: {m}")
    if "waves_file" in r:
        print(f"qkdlink: waveforms {r['waves_file']}", file=sys.stderr)
    if args.json:
        base = Path(args.json)
        for end in ("alice", "bob"):
            np.save(base.with_suffix(f".{end}_key.npy"), np.array(r[f"{end}_key"], dtype=np.uint64).reshape(-1, 2))
        report = {k: v for k, v in r.items() if not k.endswith("_key")}
        report["seed"] = seed
        report["config"] = cfg.to_dict()   # the distillation reads mu, p and eps from here
        report["keys"] = {end: str(base.with_suffix(f".{end}_key.npy")) for end in ("alice", "bob")}
        base.write_text(json.dumps(report, indent=2, default=float) + "\n")
        print(f"qkdlink: report {base}, sifted keys {report['keys']['alice']} / {report['keys']['bob']} "
              "(rows of slot, key byte = bit | basis << 1 | intensity << 2)", file=sys.stderr)
    return 0 if r["model_agreement"] else 1


def cmd_cosim_link(args) -> int:
    """Co-simulate Alice and Bob gateware through an ideal channel with hardware sifting."""
    from ..cosim.link import run_link_cosim
    from ..gateware.bob import BobParams
    from ..gateware.bob_model import BobSettings
    from ..gateware import protocol as proto
    cfg = load_link_config(args.config)
    alice, settings = _params_and_settings(cfg)
    bob = BobParams.from_config(cfg.gateware)
    if args.seed is not None:
        settings = type(settings)(**{**settings.as_dict(), "seed": args.seed})
    print(f"qkdlink: link co-simulation (Alice + ideal channel, loss 2^-{args.log2_loss} + Bob), "
          f"S={alice.samples_per_clock}, P={alice.slots_per_clock}, {args.slots:,} slots", file=sys.stderr)
    out = run_link_cosim(alice, bob, settings, BobSettings(seed=settings.seed + 1), slots=args.slots,
                         log2_loss=args.log2_loss)
    a, b = out["alice_key"], out["bob_key"]
    answers = [proto.unpack_answer_byte(x) for _, x in out["answers"]]
    ok = sum(1 for k, i, st in answers if st == 0 and i != 3)
    by_class = {}
    for _, key in a:
        bit, basis, intensity = proto.unpack_key_byte(key)
        name = ("signal", "decoy", "vacuum")[intensity] + "_" + "ZX"[basis]
        by_class[name] = by_class.get(name, 0) + 1
    identical = a == b
    report = {"slots": args.slots, "detections": out["records"], "answered_ok": ok, "sifted": len(a),
              "sift_fraction": len(a) / ok if ok else 0.0, "keys_identical": identical,
              "sifted_by_class": by_class, "build_s": out["build_s"], "run_s": out["run_s"]}
    print(f"detections          {out['records']:>10,}")
    print(f"sifted (both ends)  {len(a):>10,}   basis-match fraction {report['sift_fraction']:.4f} (expected 0.5)")
    print(f"keys identical      {'yes' if identical else 'NO':>10}")
    print("sifted by class     " + ", ".join(f"{k} {v}" for k, v in sorted(by_class.items())))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if identical else 1


def cmd_verilog(args) -> int:
    """Write the endpoint's Verilog and lint it with Verilator."""
    from ..cosim.verilog_export import export_verilog
    cfg = load_link_config(args.config)
    out = Path(args.out)
    files, lint = export_verilog(args.role, cfg, out, lint=not args.no_lint)
    for f in files:
        print(f"wrote {f}")
    if lint is not None:
        print(f"verilator lint: clean with -Wall minus the waivers in {out / 'LINT_WAIVERS.md'}")
    return 0


def cmd_config(args) -> int:
    """Show, check or describe link configs."""
    import yaml
    if args.action == "fields":
        for name, allowed, default, unit, doc in field_table():
            print(f"{name:<48} default {default!r:<12} {allowed}  {doc}")
        return 0
    cfg = load_link_config(args.file)
    if args.action == "check":
        print(f"{args.file or '<built-in defaults>'}: OK")
        return 0
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def cmd_regmap(args) -> int:
    """Print a register map."""
    from ..gateware.regmap import ALICE_REGISTERS, BOB_REGISTERS
    maps = {"alice": ALICE_REGISTERS, "bob": BOB_REGISTERS}
    print(maps[args.role].to_markdown(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qkdlink",
        description="qkdlink: gateware, co-simulation and host software for trusted-relay "
                    "decoy-state BB84 QKD links and networks.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("cosim-tx", help="co-simulate the transmitter (Alice) gateware and print its statistics",
                       description=cmd_cosim_tx.__doc__ + " Python wakes once per batch, not per slot; "
                       "the gateware's snapshots and digests are compared with the bit-exact model after every batch.")
    c.add_argument("config", nargs="?", help="link YAML (default: the built-in 65 km hop)")
    c.add_argument("--slots", type=_positive_int, default=1_000_000, help="slots to emit (default 1e6)")
    c.add_argument("--batches", type=_positive_int, default=10, help="snapshots/model checks during the run (default 10)")
    c.add_argument("--seed", type=int, help="PRNG seed (default: gateware.prng_seed of the config)")
    c.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    c.add_argument("--waves", action="store_true", help="dump waveforms (slow; use with few slots)")
    c.add_argument("--work-dir", metavar="DIR", help="keep the simulator's logs and waves here")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_cosim_tx)

    f = sub.add_parser("sim", help="co-simulate the full link: gateware + physical channel + sifting",
                       description=cmd_sim.__doc__ + " Reports per intensity class what was sent, detected "
                       "and sifted, the errors, and the measured gain and QBER next to the analytic expectation.")
    f.add_argument("config", nargs="?", help="link YAML (default: the built-in 65 km hop)")
    f.add_argument("--slots", type=_positive_int, default=1_000_000, help="slots to emit (default 1e6)")
    f.add_argument("--seed", type=int, help="seed (default: gateware.prng_seed of the config)")
    f.add_argument("--json", metavar="FILE", help="write the report as JSON and both sifted keys next to it")
    f.add_argument("--eve", metavar="ATTACK", help="intercept-resend[:FRACTION] (default fraction 1), pns (the "
                   "attack that keeps the honest signal gain) or beam-splitting")
    f.add_argument("--clock-offset-ppm", metavar="X", help="Bob's clock runs X ppm fast (-1000..1000)")
    f.add_argument("--satellite", action="store_true", help="a Micius-like satellite downlink pass replaces "
                   "the fibre (loss anchors unconfirmed, see docs/channel.md)")
    f.add_argument("--pass-time-s", metavar="T", help="with --satellite: time from culmination (default 0)")
    f.add_argument("--waves", action="store_true", help=f"build with tracing and dump a VCD (at most "
                   f"{WAVES_MAX_SLOTS:,} slots); the path is printed")
    f.add_argument("--work-dir", metavar="DIR", help="keep the simulator's files (and waves) here")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_sim)

    k = sub.add_parser("cosim-link", help="co-simulate Alice + Bob through an ideal channel, with hardware sifting",
                       description=cmd_cosim_link.__doc__ + " Both ends' sifted keys must be identical.")
    k.add_argument("config", nargs="?", help="link YAML (default: the built-in 65 km hop)")
    k.add_argument("--slots", type=_positive_int, default=1_000_000, help="slots to emit (default 1e6)")
    k.add_argument("--log2-loss", type=int, default=8, choices=range(1, 16), metavar="K",
                   help="channel transmittance 2^-K (default 8)")
    k.add_argument("--seed", type=int, help="Alice's PRNG seed (Bob's squashing PRNG uses seed + 1)")
    k.add_argument("--json", metavar="FILE", help="write the report as JSON")
    k.set_defaults(func=cmd_cosim_link)

    from .keyrate_cli import add_parser as add_keyrate
    add_keyrate(sub)
    from .device_cli import add_parsers as add_device
    add_device(sub)
    from .distill_cli import add_parser as add_distill
    add_distill(sub)
    from ..boards.cli import add_parser as add_build
    add_build(sub)
    from .plot_cli import add_parser as add_plot_distance
    add_plot_distance(sub)

    v = sub.add_parser("verilog", help="write an endpoint's Verilog and lint it with Verilator",
                       description=cmd_verilog.__doc__)
    v.add_argument("--role", choices=("alice", "bob", "link"), required=True,
                   help="alice (transmitter), bob (receiver) or link (both in one top, for co-simulation)")
    v.add_argument("--out", required=True, metavar="DIR", help="output folder")
    v.add_argument("--config", help="link YAML for the build parameters (default: built-in)")
    v.add_argument("--no-lint", action="store_true", help="skip the Verilator lint")
    v.set_defaults(func=cmd_verilog)

    g = sub.add_parser("config", help="show, check or list the fields of link configs",
                       description=cmd_config.__doc__)
    g.add_argument("action", choices=("show", "check", "fields"))
    g.add_argument("file", nargs="?", help="link YAML (default: built-in)")
    g.set_defaults(func=cmd_config)

    r = sub.add_parser("regmap", help="print a register map as Markdown", description=cmd_regmap.__doc__)
    r.add_argument("--role", choices=("alice", "bob"), default="alice")
    r.set_defaults(func=cmd_regmap)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"qkdlink: config error: {e}", file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"qkdlink: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qkdlink: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # the package's own module, so that subcommand modules raise the UsageError caught here
    from qkdlink.host.cli import main as _main
    sys.exit(_main())
