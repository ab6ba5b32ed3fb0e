"""``qkdlink distill``: distill the sifted keys of a ``qkdlink sim --json`` run into final keys.

Registered on the main command line by ``add_parser(subparsers)``; see ``docs/distillation.md``.
Reads the report (its ``slots``, ``config`` and ``keys``) and both ends' sifted rows, runs
:func:`qkdlink.host.distill.distill` (both ends in this process, every message authenticated),
prints the ledger, and writes each end's final key to its own file (atomically, mode 0600;
nothing is written on an abort). Key material is never printed: only SHA-256 fingerprints.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from .config import ConfigError, link_config_from_dict

__all__ = ["add_parser", "cmd_distill", "load_sim_output", "SimOutputError", "write_key_atomic"]

EPILOG = """examples:
  qkdlink sim link.yaml --slots 30000000 --json run.json
  qkdlink distill run.json                         simulation-only key derived from the seed
  qkdlink distill run.json --preshared-key psk.bin --method ldpc --json ledger.json

exit codes: 0 keys distilled, 1 aborted (no key written), 2 bad input
"""


class SimOutputError(ValueError):
    """The sim output is missing or malformed; the message names the file and the problem."""


def _load_rows(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise SimOutputError(f"{path}: {what} sifted-key file not found")
    try:
        rows = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SimOutputError(f"{path}: not a numpy .npy file ({e})") from None
    if rows.ndim != 2 or rows.shape[1] != 2:
        raise SimOutputError(f"{path}: rows must have shape (n, 2) = (slot, key_byte), got {rows.shape}")
    if rows.dtype.kind not in "iu":
        raise SimOutputError(f"{path}: rows must be integers, got dtype {rows.dtype}")
    return rows.astype(np.uint64)


def _key_path(report_path: Path, stored: str | None, end: str) -> Path:
    """The rows file: the report's path as written, else next to the report (same name)."""
    candidates = []
    if stored:
        p = Path(stored)
        candidates += [p, report_path.parent / p.name]
    candidates.append(report_path.with_suffix(f".{end}_key.npy"))
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def load_sim_output(path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(report, alice_rows, bob_rows) of a ``qkdlink sim --json`` output; :class:`SimOutputError`
    naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise SimOutputError(f"{path}: file not found")
    try:
        report = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SimOutputError(f"{path}: not JSON ({e})") from None
    if not isinstance(report, dict):
        raise SimOutputError(f"{path}: expected a JSON object (the sim report)")
    for k in ("slots", "config"):
        if k not in report:
            raise SimOutputError(f"{path}: no {k!r} entry; is this a `qkdlink sim --json` report?")
    slots = report["slots"]
    if isinstance(slots, bool) or not isinstance(slots, int) or slots <= 0:
        raise SimOutputError(f"{path}: 'slots' = {slots!r}: must be a positive integer")
    keys = report.get("keys") or {}
    rows = []
    for end in ("alice", "bob"):
        rows.append(_load_rows(_key_path(path, keys.get(end) if isinstance(keys, dict) else None, end), end))
    a, b = rows
    for end, r in (("alice", a), ("bob", b)):
        if r.shape[0] and int(r[:, 0].max()) >= slots:
            raise SimOutputError(f"{path}: {end}'s rows reach slot {int(r[:, 0].max())}, beyond the report's "
                                 f"{slots} slots (rows from another run?)")
    if a.shape != b.shape:
        raise SimOutputError(f"{path}: Alice has {a.shape[0]} sifted rows, Bob {b.shape[0]}: the ends must hold "
                             "the same sifted slots")
    if a.shape[0] and not np.array_equal(a[:, 0], b[:, 0]):
        i = int(np.flatnonzero(a[:, 0] != b[:, 0])[0])
        raise SimOutputError(f"{path}: row {i}: Alice's slot {int(a[i, 0])} != Bob's slot {int(b[i, 0])}")
    if a.shape[0] == 0:
        raise SimOutputError(f"{path}: no sifted rows (empty key): nothing to distill; run more slots")
    return report, a, b


def write_key_atomic(path: Path, bits: np.ndarray) -> None:
    """Write packed key bits to ``path`` atomically (temp file in the same folder, fsync, rename),
    created with mode 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if (abs(v) < 1e-3 and v) or abs(v) >= 1e7 else f"{v:,.4f}".rstrip("0").rstrip(".")
    return str(v)


LEDGER_ROWS = (
    ("pulses", "pulses sent"), ("sifted_bits", "sifted bits"), ("key_basis_bits", "key-basis (Z) bits"),
    ("test_basis_bits", "test-basis (X) bits, disclosed"), ("test_errors", "test-basis errors"),
    ("sampled_bits", "Z bits sampled for the QBER, disclosed"), ("sample_errors", "errors in the sample"),
    ("reconciled_bits", "bits reconciled"), ("disclosed_ec_bits", "disclosed by reconciliation"),
    ("dropped_bits", "dropped (LDPC frames not decoded)"), ("ec_rounds", "reconciliation round trips"),
    ("corrected_bits", "errors corrected"), ("verification_bits", "verification tag bits"),
    ("s_key_0", "s_Z0 (vacuum key bits, lower bound)"), ("s_key_1", "s_Z1 (single-photon key bits, lower bound)"),
    ("s_key_1_times_1_minus_h_phase", "s_Z1 (1 - h(phase error))"), ("security_bits", "6 log2(21/eps_sec) + log2(2/eps_cor)"),
    ("pa_input_bits", "privacy amplification in"), ("pa_output_bits", "privacy amplification out (key length)"),
    ("auth_messages", "authenticated messages"), ("auth_key_bits_consumed", "authentication key consumed"),
    ("auth_replenish_bits", "returned to the authentication pool"), ("final_key_bits", "final key bits"),
)


def print_ledger(ledger, report: dict, out=None) -> None:
    """The ledger as a table (totals over the blocks), then the rates and the security parameters."""
    out = out or sys.stdout
    d = ledger.to_dict()
    tot = d["totals"]
    w = 44
    print(f"{'ledger':<{w}}{'total':>16}", file=out)
    for key, label in LEDGER_ROWS:
        print(f"{label:<{w}}{_fmt(tot[key]):>16}", file=out)
    rate = tot["final_key_bits"] / report["slots"]
    first = ledger.blocks[0]
    lines = [("blocks", len(ledger.blocks)), ("reconciliation", d["method"]),
             ("QBER test basis / key basis (corrected)", f"{d['qber_test']:.4%} / {d['qber_key']:.4%}"),
             ("phase error bound (block 0)", f"{first.phase_error:.4f}"),
             ("f measured (disclosed / n h(QBER))", _fmt(d["f_measured"])),
             ("eps_sec / eps_cor", f"{_fmt(d['eps_sec'])} / {_fmt(d['eps_cor'])}"),
             ("authentication forgery probability", _fmt(tot["auth_forgery_probability"])),
             ("eps total (secrecy + correctness + auth)", _fmt(d["eps_total"])),
             ("final key bits per pulse", f"{rate:.4g}")]
    pulse_mhz = report.get("config", {}).get("gateware", {})
    try:
        mhz = float(pulse_mhz["clock_mhz"]) * int(pulse_mhz["slots_per_clock"])
        lines.append(("final key rate at the pulse rate", f"{rate * mhz * 1e6:,.0f} bit/s ({mhz:g} MHz pulses)"))
    except (KeyError, TypeError, ValueError):
        pass
    for label, v in lines:
        print(f"{label:<{w}}{str(v) if isinstance(v, str) else _fmt(v):>16}" if len(str(v)) <= 16
              else f"{label:<{w}}{v}", file=out)
    t = d["timings_s"]
    print("time (s): " + ", ".join(f"{k.removesuffix('_s')} {v:.3f}" for k, v in t.items()), file=out)


def cmd_distill(args) -> int:
    """Distill the sifted keys of a `qkdlink sim --json` output into final secret keys."""
    from . import distill as D
    try:
        report, a, b = load_sim_output(args.sim_output)
        cfg = link_config_from_dict(report["config"], origin=f"{args.sim_output} (config)")
    except SimOutputError as e:
        print(f"qkdlink distill: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"qkdlink distill: {e}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else report.get("seed", 1)
    if args.preshared_key:
        p = Path(args.preshared_key)
        if not p.is_file():
            print(f"qkdlink distill: {p}: pre-shared key file not found", file=sys.stderr)
            return 2
        psk = p.read_bytes()
        if len(psk) < 64:
            print(f"qkdlink distill: {p}: {len(psk)} bytes; the pre-shared key needs at least 64 (two 128-bit "
                  "hash keys plus one-time pads)", file=sys.stderr)
            return 2
        secure_random = args.seed is None
    else:
        psk = None
        secure_random = False
        print("qkdlink distill: WARNING: no --preshared-key: the authentication key is derived from the seed "
              f"({seed}). FOR SIMULATION ONLY -- anyone who knows the seed can forge every message.",
              file=sys.stderr)
    out_base = Path(args.out) if args.out else Path(args.sim_output).with_suffix("")
    try:
        res = D.distill(a, b, report, cfg, preshared_key=psk, seed=None if secure_random else int(seed),
                        method=args.method)
    except D.DistillInputError as e:
        print(f"qkdlink distill: {args.sim_output}: {e}", file=sys.stderr)
        return 2
    except D.DistillAbort as e:
        print(f"qkdlink distill: ABORTED, no key written: {e}", file=sys.stderr)
        if args.json:
            Path(args.json).write_text(json.dumps({"aborted": True, "reason": e.reason, "detail": e.detail,
                                                   "block": e.block, "stage": e.stage}, indent=2) + "\n")
        return 1
    L = res.ledger
    print_ledger(L, report)
    fa, fb = D.key_fingerprint(res.alice_key), D.key_fingerprint(res.bob_key)
    print(f"final keys: {L.final_key_bits:,} bits; SHA-256 alice {fa[:16]}..., bob {fb[:16]}...: "
          f"{'IDENTICAL' if L.keys_identical else 'DIFFERENT'}")
    if not L.keys_identical:
        print("qkdlink distill: the final keys differ; nothing written", file=sys.stderr)
        return 1
    paths = {end: Path(f"{out_base}.{end}.key") for end in ("alice", "bob")}
    for end, bits in (("alice", res.alice_key), ("bob", res.bob_key)):
        write_key_atomic(paths[end], bits)
    print(f"qkdlink distill: keys written to {paths['alice']} and {paths['bob']} (packed bits, MSB first, "
          "mode 0600)", file=sys.stderr)
    if args.json:
        doc = {"aborted": False, "sim_output": str(args.sim_output), "slots": report["slots"],
               "final_key_bits_per_pulse": L.final_key_bits / report["slots"], "ledger": L.to_dict(),
               "keys": {end: str(p) for end, p in paths.items()},
               "simulation_only_authentication_key": psk is None}
        Path(args.json).write_text(json.dumps(doc, indent=2, default=float) + "\n")
    res.alice_key[:] = 0
    res.bob_key[:] = 0
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``distill`` on the ``qkdlink`` subcommand parsers; returns its parser."""
    d = subparsers.add_parser(
        "distill", help="distill the sifted keys of a sim output into final secret keys (with the ledger)",
        description=cmd_distill.__doc__ + " Parameter estimation (Lim et al. 2014 finite key), reconciliation "
        "(Cascade or LDPC), verification, privacy amplification; every classical message authenticated "
        "(Wegman-Carter). Prints the ledger of every bit; writes Alice's and Bob's keys to "
        "OUT.alice.key / OUT.bob.key.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("sim_output", metavar="SIM_OUTPUT", help="report written by `qkdlink sim --json` (the sifted "
                   "keys are read from the .alice_key.npy / .bob_key.npy files next to it)")
    d.add_argument("--json", metavar="FILE", help="write the ledger as JSON")
    d.add_argument("--preshared-key", metavar="FILE", help="authentication key shared in advance (raw bytes, "
                   ">= 64); default: derived from the seed, for simulation only")
    d.add_argument("--method", choices=("auto", "cascade", "ldpc"), help="reconciliation (default: the "
                   "config's postprocessing.reconciliation)")
    d.add_argument("--seed", type=int, help="seed for the protocol's random choices (default: the sim's seed; "
                   "with --preshared-key and no --seed the OS random generator is used)")
    d.add_argument("--out", metavar="BASE", help="write the keys to BASE.alice.key and BASE.bob.key "
                   "(default: SIM_OUTPUT without .json)")
    d.set_defaults(func=cmd_distill)
    return d
