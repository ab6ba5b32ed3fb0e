"""Search for variable-node degree distributions of high-rate mother codes, scored on finite codes.

Where the published distributions are weak (Elkouss et al. 2009, Table I, rate 0.9: threshold at
f = 1.15), the mother codes of rates 0.85 and 0.9 (``ldpc_codes.SEARCHED_DISTRIBUTIONS``) use
edge-perspective distributions lambda on four degrees {2, 3, d1, d2}, found here by a seeded random
search. Each candidate is built exactly as a mother code (PEG base graph, circulant lifting,
``ldpc_codes``) and scored by the efficiency f = (m/n) / h(q) at which at least half of ``frames``
random BSC(q) error patterns are decoded exactly by the layered int16 sum-product (100 iterations),
on a grid of f. This is a finite-length, noisy score (a few frames per point), not a density-evolution
threshold: the search narrows the candidates, and a second pass with more frames (``evaluate``)
decides.

    .venv/bin/python -m qkdlink.host.ldpc_design search 0.9 --seed 2 --count 20     # f50 per candidate
    .venv/bin/python -m qkdlink.host.ldpc_design evaluate 0.9 '{"2": 0.0738, "3": 0.212, "11": 0.4358, "38": 0.2784}'
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from . import ldpc_codes as lc
from .ldpc_reconcile import binary_entropy

__all__ = ["build_with_distribution", "qber_for_efficiency", "decoded_fractions", "half_efficiency",
           "random_candidates"]

F_GRID = (1.04, 1.06, 1.08, 1.10, 1.12, 1.14, 1.17, 1.20, 1.25)


def build_with_distribution(rate: float, lam: dict[int, float], n: int = 65536, nb: int = 512,
                            seed: int = 0) -> lc.LdpcCode:
    """A code of design rate ``rate`` with variable degrees from ``lam`` (edge perspective), built like
    ``ldpc_codes.construct_code`` (degree-2 columns capped at mb - 1, degrees capped at mb) on a base
    graph of ``nb`` columns; no puncturing order (not needed for scoring)."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate {rate!r}: must be in (0, 1)")
    if not lam or abs(sum(lam.values()) - 1.0) > 1e-6 or min(lam) < 2 or min(lam.values()) < 0:
        raise ValueError(f"lambda {lam!r}: fractions >= 0 summing to 1 over degrees >= 2")
    if n % nb:
        raise ValueError(f"n = {n} is not a multiple of nb = {nb}")
    z, mb = n // nb, int(round(nb * (1.0 - rate)))
    degs = np.array(sorted(lam), dtype=np.int64)
    counts = lc._largest_remainder(np.array([lam[d] / d for d in degs]), nb)
    cols = np.minimum(np.repeat(degs, counts), mb)
    excess = int((cols == 2).sum()) - (mb - 1)
    if excess > 0:
        cols[np.flatnonzero(cols == 2)[:excess]] = 3
    B = lc._peg_base(np.sort(cols), mb, lc._rng("peg", rate, n, seed))
    B = B[:, lc._rng("perm", rate, n, seed).permutation(nb)]
    S = lc._lift(B, z, lc._rng("lift", rate, n, seed))
    return lc.LdpcCode(rate, n, seed, z, S, np.zeros(0, dtype=np.int64), lc._expand(S, z))


def qber_for_efficiency(code: lc.LdpcCode, f: float) -> float:
    """q with (m / n) / h(q) = f (bisection on q in (0, 1/2))."""
    target, lo, hi = (code.m / code.n) / f, 1e-6, 0.5
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if binary_entropy(mid) < target else (lo, mid)
    return lo


def decoded_fractions(code: lc.LdpcCode, frames: int, f_grid=F_GRID, seed: int = 1,
                      stop_when_all: bool = True) -> list[tuple[float, int]]:
    """(f, frames decoded exactly) for each f of the grid, fresh error patterns per point."""
    rng = np.random.default_rng(seed)
    out = []
    for f in f_grid:
        q = qber_for_efficiency(code, f)
        e = (rng.random((frames, code.n)) < q).astype(np.uint8)
        llr = np.full(code.n, math.log((1 - q) / q), dtype=np.float32)
        dec, conv, _ = lc.decode_native(code, llr, code.syndromes(e), max_iter=100, rule="sum-product-fixed",
                                        threads=2)
        out.append((f, int((conv & (dec == e).all(axis=1)).sum())))
        if stop_when_all and out[-1][1] == frames:
            break
    return out


def half_efficiency(results: list[tuple[float, int]], frames: int) -> float:
    """Lowest f of the grid at which at least half of the frames decoded (inf if none)."""
    return next((f for f, ok in results if 2 * ok >= frames), math.inf)


def random_candidates(rng: np.random.Generator, count: int) -> list[dict[int, float]]:
    """lambda on {2, 3, d1, d2}: lambda_2 in [0.06, 0.10], lambda_3 in [0.12, 0.30], d1 in 7..12,
    d2 in 20..40, the rest split between d1 and d2 in a ratio from [0.3, 0.7]."""
    out = []
    for _ in range(count):
        l2, l3 = rng.uniform(0.06, 0.10), rng.uniform(0.12, 0.30)
        d1, d2 = int(rng.integers(7, 13)), int(rng.integers(20, 41))
        w, rest = rng.uniform(0.3, 0.7), 1.0 - l2 - l3
        out.append({2: l2, 3: l3, d1: rest * w, d2: rest * (1.0 - w)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("search", help="score random candidates (8 frames per f)")
    s.add_argument("rate", type=float)
    s.add_argument("--seed", type=int, default=2)
    s.add_argument("--count", type=int, default=20)
    e = sub.add_parser("evaluate", help="score given distributions with more frames")
    e.add_argument("rate", type=float)
    e.add_argument("lam", nargs="+", help='JSON {"degree": fraction, ...}')
    e.add_argument("--frames", type=int, default=24)
    for p in (s, e):
        p.add_argument("--n", type=int, default=65536)
        p.add_argument("--nb", type=int, default=512)
    args = ap.parse_args(argv)
    if args.cmd == "search":
        cands, frames = random_candidates(np.random.default_rng(args.seed), args.count), 8
    else:
        cands, frames = [{int(k): float(v) for k, v in json.loads(x).items()} for x in args.lam], args.frames
    for lam in cands:
        code = build_with_distribution(args.rate, lam, args.n, args.nb)
        res = decoded_fractions(code, frames, stop_when_all=args.cmd == "search")
        print(json.dumps({"f50": half_efficiency(res, frames), "frames": frames,
                          "lambda": {k: round(v, 4) for k, v in lam.items()}, "decoded": res}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
