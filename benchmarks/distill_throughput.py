"""Benchmark: end-to-end key distillation throughput (``host/distill.py``) on fast_link output.

One link (default 15 km, the decoy settings of ``tests/host/test_distill.py``), simulated with
``host/fast_link.py`` up to ``--sifted`` sifted bits, then distilled with each reconciliation
method: sifted Mbit/s end to end (both ends in this one process), final key bits, and the time
of every stage (estimate, reconcile, verify, PA, auth = sealing/opening frames, codec = message
encoding) so the bottleneck is visible. Baseline measured in the same run: the same
reconciliation run locally (both sides in one call, no messages, no authentication) on the
same bits, which shows what the authenticated message flow costs on top. Each method is
distilled ``--repeat`` times: the minimum and median wall time are reported, with the stages of
the fastest run; the load average is recorded at the start and the end (2-core machine shared
with other jobs: compare runs made under similar load). Prints JSON.

    .venv/bin/python benchmarks/distill_throughput.py [--sifted 2e6] [--km 15] [--methods cascade,ldpc] [--repeat 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import numpy as np

from qkdlink.host import auth, cascade, distill as D, fast_link, ldpc_reconcile
from qkdlink.host.config import default_link_config

SOURCE = dict(p_signal=0.5, p_decoy=0.35, p_vacuum=0.15, mu_signal=0.6, mu_decoy=0.2)


def link(km: float, eps_sec: float, block_bits: int):
    base = default_link_config()
    return dataclasses.replace(base, channel=dataclasses.replace(base.channel, length_km=km),
                               source=dataclasses.replace(base.source, **SOURCE),
                               postprocessing=dataclasses.replace(base.postprocessing, eps_sec=eps_sec,
                                                                  block_bits=block_bits))


def baseline(method: str, r: dict, qber: float) -> dict:
    """The reconciliation alone on the Z bits, both sides in one call (no messages, no auth; Cascade
    on the same frames as distill)."""
    a, b = r["alice_rows"][:, 1], r["bob_rows"][:, 1]
    z = ((a >> np.uint64(1)) & np.uint64(1)) == 0
    xa, xb = (a[z] & np.uint64(1)).astype(np.uint8), (b[z] & np.uint64(1)).astype(np.uint8)
    t0 = time.perf_counter()
    if method == "cascade":                        # the same frames as distill (DistillOptions.cascade_frame_bits)
        frame_bits = D.DistillOptions().cascade_frame_bits
        _, st, _ = cascade.reconcile(D.cascade_frames(xa, frame_bits), D.cascade_frames(xb, frame_bits), qber, seed=1)
    else:
        _, st, _ = ldpc_reconcile.reconcile(xa, xb, qber, channel=None, alice_rng=np.random.default_rng(1))
    dt = time.perf_counter() - t0
    return {"bits": int(xa.size), "s": round(dt, 3), "mbit_per_s": round(xa.size / dt / 1e6, 4),
            "leaked_bits": int(st.leaked_bits)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sifted", type=float, default=2e6, help="sifted bits to simulate (default 2e6)")
    p.add_argument("--km", type=float, default=15.0, help="fibre length in km (default 15)")
    p.add_argument("--eps-sec", type=float, default=1e-6)
    p.add_argument("--methods", default="cascade,ldpc", help="comma-separated: cascade, ldpc, auto")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--repeat", type=int, default=3, help="distillations per method (default 3)")
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    sifted = int(args.sifted)
    cfg = link(args.km, args.eps_sec, block_bits=max(1000, sifted + sifted // 2))   # one block
    slots = fast_link.expected_slots_for_sifted(cfg, sifted)
    t0 = time.perf_counter()
    r = fast_link.simulate(cfg, slots=slots, seed=args.seed)
    sim_s = time.perf_counter() - t0
    native_hash = getattr(auth, "native_hash_available", lambda: False)()
    out = {"benchmark": "distill_throughput", "python": platform.python_version(), "cpus": os.cpu_count(),
           "loadavg_start": [round(x, 2) for x in load_start], "repeat": args.repeat,
           "auth_hash_engine": "native" if native_hash else "tables",
           "link": {"length_km": args.km, "slots": slots, "sifted_bits": r["sifted"],
                    "qber_signal": r["classes"]["signal"]["qber"]},
           "fast_link": {"s": round(sim_s, 2), "slots_per_s": round(slots / sim_s),
                         "sifted_bits_per_s": round(r["sifted"] / sim_s)},
           "runs": {}}
    for method in args.methods.split(","):
        walls, best = [], None
        try:
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                res = D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=args.seed, method=method)
                walls.append(time.perf_counter() - t0)
                if best is None or walls[-1] < best[0]:
                    best = (walls[-1], res)
        except D.DistillAbort as e:
            out["runs"][method] = {"aborted": True, "reason": e.reason, "detail": e.detail,
                                   "s": round(time.perf_counter() - t0, 3)}
            continue
        wall, res = best
        L = res.ledger
        b = L.blocks[0]
        stages = {k.removesuffix("_s"): round(v, 3) for k, v in L.timings_s.items()}
        stages["other"] = round(wall - sum(L.timings_s.values()), 3)
        out["runs"][method] = {
            "method": L.method, "wall_s": round(wall, 3), "wall_s_median": round(float(np.median(walls)), 3),
            "sifted_mbit_per_s": round(r["sifted"] / wall / 1e6, 4),
            "final_key_bits": L.final_key_bits, "pa_output_bits": b.pa_output_bits,
            "final_key_bits_per_pulse": L.final_key_bits / slots, "keys_identical": L.keys_identical,
            "disclosed_ec_bits": b.disclosed_ec_bits, "f_measured": round(b.f_measured, 4),
            "ec_rounds": b.ec_rounds, "auth_messages": b.auth_messages,
            "auth_key_bits_consumed": b.auth_key_bits_consumed, "dropped_bits": b.dropped_bits,
            "stages_s": stages, "bottleneck": max(stages, key=stages.get),
            "baseline_reconcile_local": baseline(L.method, r, max(b.qber_key_sample, 1e-3)),
        }
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
