"""Benchmark: authenticated payload throughput of qkdlink.host.auth (Wegman-Carter, GF(2^128)).

Seals a batch of frames of one size at Alice, opens them in order at Bob, and reports MB/s of
payload for seal, open and the round trip (seal + open), for several sizes (with the default
hash engine: the native kernel when it builds). The hash engines on 1 MiB and on one frame's
worth of small input (64 B payload + header), measured in the same run: ``native``
(``host/native/polyhash.cpp``, PCLMULQDQ), ``tables`` (numpy, the fallback), ``horner``
(pure-Python Horner with Shoup tables, the baseline), and SHA-256 from hashlib (the machine's
speed for a C hash). The load average is recorded at the start and the end.
Goal: >= 10 MB/s round trip for frames of 64 KiB and up. Prints JSON.

    .venv/bin/python benchmarks/auth_throughput.py [--seconds S]

Wall-clock numbers depend on the machine and its load; the tests assert none of them.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np

from qkdlink.host.auth import (ALICE_TO_BOB, DEFAULT_TAG_BITS, HEADER_BYTES, Authenticator, KeyPool, _PolyHash,
                               epsilon_per_message, native_hash_available)

SIZES = [64, 4096, 65536, 1 << 20, 16 << 20]
GOAL_MB_PER_S = 10.0


def _rate(fn, n_bytes: int, seconds: float) -> float:
    """Bytes/s of fn() over at least `seconds` (and at least 2 calls)."""
    fn()                                                    # warm-up: tables, caches
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        dt = time.perf_counter() - t0
        if calls >= 2 and dt >= seconds:
            return n_bytes * calls / dt


class _Link:
    """Alice's and Bob's pools and the current pair of sessions."""

    def __init__(self, key: bytes):
        self.pa, self.pb = KeyPool(key), KeyPool(key)
        self.a = self.b = None
        self.n = 0

    def fresh(self):
        """New sessions, both pools moved to the same positions (frames sealed but never opened
        by the seal-only timing leave Bob behind)."""
        for x in (self.a, self.b):
            if x is not None:
                x.close()
        for s in ("alice->bob", "bob->alice"):
            p = max(self.pa.position(s), self.pb.position(s))
            self.pa.discard_to(s, p), self.pb.discard_to(s, p)
        self.n += 1
        sid = self.n.to_bytes(16, "big")
        self.a, self.b = Authenticator("alice", self.pa, sid), Authenticator("bob", self.pb, sid)
        return self.a, self.b

    def pads_left(self) -> int:
        return self.pa.available("alice->bob") // DEFAULT_TAG_BITS - 2


def measure(seconds: float) -> dict:
    rng = np.random.default_rng(1)
    link = _Link(rng.bytes(32 + (16 << 20)))                # ~ 760 000 one-time pads per direction
    results = []
    for n in SIZES:
        payload = rng.bytes(n)
        a, b = link.fresh()
        b.open(a.seal(payload))                             # warm-up (hash tables)
        # seal a batch, then open it in order: both timed directly
        batch = max(2, min(link.pads_left() // 2, int(seconds * 30e6 / max(n, 1024)), 4096, (256 << 20) // n))
        t0 = time.perf_counter()
        frames = [a.seal(payload) for _ in range(batch)]
        t_seal = time.perf_counter() - t0
        t0 = time.perf_counter()
        for f in frames:
            b.open(f)
        t_open = time.perf_counter() - t0
        del frames
        results.append({"payload_bytes": n, "frames_timed": batch,
                        "seal_mb_per_s": round(n * batch / t_seal / 1e6, 2),
                        "open_mb_per_s": round(n * batch / t_open / 1e6, 2),
                        "round_trip_mb_per_s": round(n * batch / (t_seal + t_open) / 1e6, 2),
                        "round_trip_frames_per_s": round(batch / (t_seal + t_open))})
    hash_key = int.from_bytes(rng.bytes(16), "big")
    engines = {"native": None, "tables": None, "horner": None}
    if native_hash_available():
        engines["native"] = _PolyHash(hash_key, engine="native")
    engines["tables"] = _PolyHash(hash_key, engine="tables")
    engines["horner"] = _PolyHash(hash_key, engine="horner")
    data = rng.bytes(1 << 20)
    header, small = rng.bytes(HEADER_BYTES), rng.bytes(64)
    digests = {name: h.digest([data]) for name, h in engines.items() if h is not None}
    assert len(set(digests.values())) == 1, "hash engines disagree"
    hashing = {}
    for name, h in engines.items():
        if h is None:
            hashing[name] = None
            continue
        rate = _rate(lambda h=h: h.digest([data]), len(data), seconds / 4)
        small_rate = _rate(lambda h=h: h.digest((header, small)), 1, seconds / 8)
        hashing[name] = {"mb_per_s_1mib": round(rate / 1e6, 1), "us_per_frame_64b": round(1e6 / small_rate, 2)}
    sha_rate = _rate(lambda: hashlib.sha256(data).digest(), len(data), seconds / 4)
    big = [r for r in results if r["payload_bytes"] >= 65536]
    best = hashing["native"] or hashing["tables"]
    return {
        "tag_bits": DEFAULT_TAG_BITS,
        "epsilon_per_message_log2": round(float(np.log2(epsilon_per_message(16 << 20, DEFAULT_TAG_BITS))), 2),
        "frames_hash_engine": link.pa._streams[ALICE_TO_BOB].hasher.engine,
        "frames": results,
        "hash_engines": hashing,
        "baseline_sha256_mb_per_s_1mib": round(sha_rate / 1e6, 1),
        "speedup_1mib_vs_horner": round(best["mb_per_s_1mib"] / hashing["horner"]["mb_per_s_1mib"], 1),
        "speedup_1mib_vs_tables": round(best["mb_per_s_1mib"] / hashing["tables"]["mb_per_s_1mib"], 1),
        "goal_round_trip_mb_per_s": GOAL_MB_PER_S,
        "meets_goal": all(r["round_trip_mb_per_s"] >= GOAL_MB_PER_S for r in big),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="rough time budget per payload size (default 1)")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()
    res = measure(args.seconds)
    print(json.dumps({"benchmark": "auth_throughput", "machine": platform.machine(),
                      "python": platform.python_version(), "cpus": os.cpu_count(),
                      "loadavg_start": [round(x, 2) for x in load_start],
                      "loadavg_end": [round(x, 2) for x in os.getloadavg()], **res}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
