"""Benchmark: Toeplitz privacy-amplification throughput, native GF(2)[z] engine vs numpy FFT.

For each input size n and each ratio n/m it times, in this one run:

* ``native``: ``toeplitz_hash(method="native")`` with a fresh seed, 0/1 byte input and
  output (the pipeline's format), packed uint64 input and output, and ``ToeplitzHasher``
  with the seed transform precomputed (a reused public seed);
* ``numpy``: the exact numpy float64 four-step path (``method="fft"``), the reference and
  fallback, which this benchmark uses as the baseline (``speedup_vs_numpy`` = its time over
  the native time, both fresh seed, byte I/O);
* the plain numpy FFT of TOOLCHAIN.md (one ``np.fft.rfft`` per operand, not exact for large
  n) where feasible.

Exactness: the native output is compared bit for bit with the numpy path at every size and
with direct packed AND + popcount parities of random rows (``--numpy-max`` limits the numpy
path, ~17 s and 2.6 GB at n = 10^8 on a busy machine). Times are best-of-``reps`` wall
clock (``best_s``, the Mbit/s figures: input bits n per second) and the process CPU time of
that call (``cpu_s``; all threads, so it exceeds ``best_s`` when both cores work); the
machine is shared, so the load average is recorded too. Memory: peak resident set size
above the inputs while one call runs (``/proc/self/clear_refs`` resets the peak), for both
engines at every size. Goal: >= 100 Mbit/s of input. References: 71 Mbps CPU FFT (Tang et
al. 2019), 108 Mb/s Toshiba real-time PA (Yuan et al. 2018). Prints JSON.

    .venv/bin/python benchmarks/pa_throughput.py [--sizes 1e6,1e7,1e8] [--ratios 2,10] [--reps 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import scipy

from qkdlink.host import privacy as P
from qkdlink.host.privacy import ToeplitzHasher, pack_bits, toeplitz_bits_direct, toeplitz_hash

GOAL_MBPS = 100.0


def numpy_fft_baseline(x: np.ndarray, s: np.ndarray, m: int) -> np.ndarray:
    """Plain float64 numpy FFT middle product (TOOLCHAIN.md baseline): one transform per
    operand, zero padded to the next power of two >= n + m - 1."""
    n = x.size
    N = 1 << (n + m - 2).bit_length()
    y = np.fft.irfft(np.fft.rfft(x.astype(np.float64), N) * np.fft.rfft(s.astype(np.float64), N), N)
    return (np.rint(y[n - 1:n - 1 + m]).astype(np.int64) & 1).astype(np.uint8)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb(fn) -> float | None:
    """Peak RSS growth (MB) while ``fn`` runs, or None where Linux's counters are missing."""
    if not _reset_peak():
        return None
    rss0 = _status_kb("VmRSS")
    fn()
    hwm = _status_kb("VmHWM")
    return None if rss0 is None or hwm is None else round((hwm - rss0) / 1024, 1)


def timed(fn, reps: int):
    """(result of the first call, its wall time, best wall time and that call's CPU time)."""
    t0 = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t0
    best, cpu = cold, None
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        t, c = time.perf_counter() - t0, time.process_time() - c0
        if cpu is None or t < best:
            best, cpu = t, c
    return out, cold, best, cpu


def mbps(n: int, t: float) -> float:
    return round(n / t / 1e6, 1)


def entry(n: int, cold: float, best: float, cpu: float | None) -> dict:
    return {"cold_s": round(cold, 4), "best_s": round(best, 4),
            "cpu_s": None if cpu is None else round(cpu, 4), "mbit_per_s": mbps(n, best)}


def measure(n: int, m: int, reps: int, numpy_reps: int, numpy_max: int, toolchain_max: int,
            check_rows: int, workers: int, rng) -> dict:
    x = rng.integers(0, 2, n, dtype=np.uint8)
    s = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    xp, sp = pack_bits(x), pack_bits(s)
    res = {"n": n, "m": m, "ratio_n_over_m": round(n / m, 2)}

    nat = lambda: toeplitz_hash(x, s, m, workers=workers, method="native")  # noqa: E731
    y, cold, best, cpu = timed(nat, reps)
    res["native_fresh_seed"] = entry(n, cold, best, cpu)
    _, cold, best1, cpu1 = timed(lambda: toeplitz_hash(x, s, m, workers=1, method="native"), reps)
    res["native_fresh_seed_1_thread"] = entry(n, cold, best1, cpu1)
    yp, cold, bestp, cpup = timed(lambda: toeplitz_hash(xp, sp, m, n=n, packed_output=True, workers=workers,
                                                        method="native"), reps)
    res["native_packed_io"] = entry(n, cold, bestp, cpup)
    hasher = ToeplitzHasher(s, n, m, workers=workers, method="native")
    yh, cold, besth, cpuh = timed(lambda: hasher(x), reps)
    res["native_precomputed_seed"] = entry(n, cold, besth, cpuh)
    hasher = None           # free its seed transform before the memory measurement
    P.release_work_memory()
    res["native_peak_rss_mb"] = peak_mb(nat)
    K = P._native_lib().tz_plan(n, m)
    res["native_work_mb"] = round(2 * 8 * (1 << K) / 2**20, 1)

    ex = {"packed_equal": bool(np.array_equal(np.unpackbits(yp.view(np.uint8), count=m, bitorder="little"), y)),
          "precomputed_equal": bool(np.array_equal(yh, y))}
    rows = np.unique(np.concatenate([[0, m - 1], rng.integers(0, m, check_rows)]))
    ex["direct_rows_checked"] = int(rows.size)
    ex["direct_rows_equal"] = bool(np.array_equal(toeplitz_bits_direct(x, s, m, rows), y[rows]))

    P.release_work_memory()
    if n <= numpy_max:
        fft = lambda: toeplitz_hash(x, s, m, workers=workers, method="fft")  # noqa: E731
        res["numpy_peak_rss_mb"] = peak_mb(fft)
        yf, cold, bestf, cpuf = timed(fft, numpy_reps)
        res["numpy_fresh_seed"] = entry(n, cold, bestf, cpuf)
        P.release_work_memory()
        ex["equal_to_numpy_path"] = bool(np.array_equal(yf, y))
        res["speedup_vs_numpy"] = round(bestf / best, 2)
    if n <= toolchain_max:
        _, cold, bestb, cpub = timed(lambda: numpy_fft_baseline(x, s, m), max(1, numpy_reps))
        res["toolchain_plain_fft"] = entry(n, cold, bestb, cpub)
    res["exactness"] = ex
    res["meets_goal"] = {"fresh_seed": res["native_fresh_seed"]["mbit_per_s"] >= GOAL_MBPS,
                         "packed_io": res["native_packed_io"]["mbit_per_s"] >= GOAL_MBPS,
                         "precomputed_seed": res["native_precomputed_seed"]["mbit_per_s"] >= GOAL_MBPS}
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,1e7,1e8", help="input sizes n in bits, comma separated")
    ap.add_argument("--ratios", default="2,10", help="n/m ratios, comma separated (m = n // ratio)")
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions after a first (cold) call")
    ap.add_argument("--numpy-reps", type=int, default=1, help="timed repetitions of the numpy path")
    ap.add_argument("--numpy-max", type=float, default=1e8, help="largest n for the numpy path baseline")
    ap.add_argument("--toolchain-max", type=float, default=1e7,
                    help="largest n for the plain numpy FFT of TOOLCHAIN.md (1e8 takes ~30 s and ~5 GB)")
    ap.add_argument("--check-rows", type=int, default=32, help="random output bits recomputed directly")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    if not P.native_available():
        print("pa_throughput: the native kernel is not available", file=sys.stderr)
        return 2
    sizes = [int(float(v)) for v in args.sizes.split(",")]
    ratios = [float(v) for v in args.ratios.split(",")]
    rng = np.random.default_rng(2019)
    load0 = os.getloadavg()
    ref_n = 1 << 20            # TOOLCHAIN.md reference point: n = 2^20 in, 2^19 out, ~195 ms
    xr = rng.integers(0, 2, ref_n, dtype=np.uint8)
    sr = rng.integers(0, 2, ref_n + ref_n // 2 - 1, dtype=np.uint8)
    _, _, ref_base, _ = timed(lambda: numpy_fft_baseline(xr, sr, ref_n // 2), 2)
    _, _, ref_ours, _ = timed(lambda: toeplitz_hash(xr, sr, ref_n // 2, workers=args.workers), 3)
    results = []
    for n in sizes:
        for r in ratios:
            m = max(1, int(n // r))
            results.append(measure(n, m, args.reps, args.numpy_reps, int(args.numpy_max), int(args.toolchain_max),
                                   args.check_rows, args.workers, rng))
            print(f"pa_throughput: n = {n:.0e}, m = n/{r:g} done", file=sys.stderr)
    out = {
        "benchmark": "pa_throughput",
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "workers": args.workers,
        "native_avx512_vpclmulqdq": bool(P._native_lib().tz_vector_path()),
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "load_average_before": [round(v, 2) for v in load0],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "goal_mbit_per_s": GOAL_MBPS,
        "toolchain_reference_n_2_20": {"numpy_fft_baseline_s": round(ref_base, 4), "toolchain_md_s": 0.195,
                                       "toeplitz_hash_s": round(ref_ours, 4)},
        "references_mbit_per_s": {"tang2019_cpu_fft": 71, "yuan2018_toshiba": 108},
        "results": results,
        "all_exact": all(all(r["exactness"].get(k, True) for k in ("packed_equal", "precomputed_equal",
                                                                   "direct_rows_equal", "equal_to_numpy_path"))
                         for r in results),
    }
    print(json.dumps(out, indent=2))
    return 0 if out["all_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
