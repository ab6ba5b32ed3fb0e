"""A fast, vectorised numpy model of the whole link, for long distillation runs and benchmarks.

``qkdlink sim`` co-simulates the gateware (Verilator), which is exact but runs at about 10^6
slots/s; distillation at realistic block sizes needs 10^6-10^8 sifted bits. This module
produces the same *output* (sifted rows at both ends, per-class counts, the report shape of
``qkdlink sim --json``) from the same physics without the gateware:

1. Alice's choices: i.i.d. symbols with the config's probabilities (the distribution of
   :func:`qkdlink.cosim.channel.random_codes`; the gateware draws them from its PRNG or QRNG
   with the same distribution, not the same sequence).
2. Photons, channel, detectors: the co-simulation's own :class:`~qkdlink.cosim.channel.Channel`
   (weak coherent source, fibre loss and misalignment, detection efficiency, dark counts, dead
   time, afterpulses, jitter), run in chunks of slots with its state carried over.
3. Bob: each click is assigned to the slot of its sample (``sample // (S/P)``, as Bob's time
   tagger does on a fibre link without clock offset); several clicks in one slot are squashed
   as ``hdl/detection.py`` does (docs/receiver.md, "Detection combiner and squashing"): one
   basis -> its detector, else a random basis; one click in the chosen basis -> its bit, two ->
   a random bit. The random choices come from a seeded numpy generator, not Bob's xoroshiro.
4. Sifting: the slots where Bob's basis equals Alice's, all three intensity classes, as the
   hardware sifting keeps them (``gateware/protocol.py``: ``SIFT_QUERY`` / ``SIFT_APPLY``).

Rows are ``(slot, key_byte)`` uint64, ``key_byte = bit | basis << 1 | intensity << 2`` (basis 0 = Z,
1 = X; intensity 0 signal, 1 decoy, 2 vacuum), the format of ``FILE.alice_key.npy``.

What it leaves out: Alice's sync marker and blank slots (none with a healthy entropy source),
Bob's sync acquisition, clock offset. Use ``qkdlink sim`` to check the gateware; use this for
volume. Everything is seeded: the same ``(cfg, slots, seed)`` gives the same rows.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ..cosim.channel import Channel

__all__ = ["simulate", "class_counts", "write_sim_output", "CLASSES", "DEFAULT_CHUNK_SLOTS",
           "expected_slots_for_sifted"]

CLASSES = ("signal", "decoy", "vacuum")
DEFAULT_CHUNK_SLOTS = 1 << 22


def _alice_choices(n: int, source, rng: np.random.Generator):
    """Alice's i.i.d. (bit, basis, intensity) per slot, uint8, with the config's probabilities
    (the distribution of :func:`qkdlink.cosim.channel.random_codes` without blank slots, faster)."""
    p = np.array([source.p_signal, source.p_decoy, source.p_vacuum], dtype=float)
    cum = np.cumsum(p / p.sum())[:2]
    u = rng.random(n, dtype=np.float32)
    intensity = (u >= np.float32(cum[0])).astype(np.uint8) + (u >= np.float32(cum[1])).astype(np.uint8)
    r = rng.integers(0, 256, n, dtype=np.uint8)
    bit = r & 1
    basis = (rng.random(n, dtype=np.float32) >= np.float32(source.p_z_basis)).astype(np.uint8)
    return bit, basis, intensity


def _bob_decode(det_slot: np.ndarray, det_channel: np.ndarray, rng: np.random.Generator):
    """Clicks (slot, detector 0=H 1=V 2=D 3=A) -> one detection per slot with the squashing map.

    Returns (slot, basis, bit, multi) with ``multi`` True for double / cross-basis multi-clicks.
    """
    if det_slot.size == 0:
        e = np.zeros(0, np.int64)
        return e, e.astype(np.uint8), e.astype(np.uint8), e.astype(bool)
    key = det_slot.astype(np.int64) * 4 + det_channel.astype(np.int64)
    key = np.unique(key)                                  # sorted; duplicate clicks on one detector merge
    slot_all = key >> 2
    ch = (key & 3).astype(np.uint8)
    starts = np.flatnonzero(np.r_[True, slot_all[1:] != slot_all[:-1]])
    slot = slot_all[starts]
    mask = np.bitwise_or.reduceat(np.left_shift(np.uint8(1), ch), starts).astype(np.uint8)
    n = slot.size
    r_basis = rng.integers(0, 2, n, dtype=np.uint8)
    r_bit = rng.integers(0, 2, n, dtype=np.uint8)
    z = mask & 3
    x = (mask >> 2) & 3
    has_z, has_x = z != 0, x != 0
    basis = np.where(has_z & has_x, r_basis, has_x.astype(np.uint8)).astype(np.uint8)
    sel = np.where(basis == 0, z, x)                      # clicks in the chosen basis (2 bits: bit0, bit1)
    bit = np.where(sel == 3, r_bit, (sel == 2).astype(np.uint8)).astype(np.uint8)
    multi = (sel == 3) | (has_z & has_x)
    return slot, basis, bit, multi


def expected_slots_for_sifted(cfg, sifted_bits: int) -> int:
    """Slots needed for about ``sifted_bits`` sifted bits (signal + decoy gain, basis match)."""
    c, d, s = cfg.channel, cfg.detectors, cfg.source
    eta = 10 ** (-(c.length_km * c.loss_db_per_km + c.connector_loss_db) / 10) * d.efficiency
    gain = sum(p * (1 - math.exp(-mu * eta)) for p, mu in ((s.p_signal, s.mu_signal), (s.p_decoy, s.mu_decoy),
                                                         (s.p_vacuum, s.mu_vacuum)))
    gain += 4 * d.dark_count_per_gate
    pz = s.p_z_basis
    sift = pz * pz + (1 - pz) * (1 - pz) if pz != 0.5 else 0.5
    return max(1, int(math.ceil(sifted_bits / (gain * sift))))


def simulate(cfg, *, slots: int, seed: int = 1, chunk_slots: int = DEFAULT_CHUNK_SLOTS,
             channel_options: dict | None = None, p_z_bob: float = 0.5) -> dict:
    """Run ``slots`` slots of the link ``cfg`` (a LinkConfig); returns a report like ``run_full_link``.

    Keys of the result: ``slots``, ``seed``, ``sifted``, ``detections``, ``multi_clicks``,
    ``classes`` (per class: ``sent``, ``detected``, ``sifted``, ``errors``, ``gain``, ``qber``),
    ``transmittance``, ``wall_s``, ``slots_per_s``, ``key_slots_identical`` (always True here), and
    ``alice_rows`` / ``bob_rows``: (n, 2) uint64 arrays of ``(slot, key_byte)``.
    """
    if isinstance(slots, bool) or not isinstance(slots, (int, np.integer)) or slots <= 0:
        raise ValueError(f"slots = {slots!r}: must be a positive integer")
    if isinstance(chunk_slots, bool) or not isinstance(chunk_slots, (int, np.integer)) or chunk_slots <= 0:
        raise ValueError(f"chunk_slots = {chunk_slots!r}: must be a positive integer")
    slots, chunk_slots = int(slots), int(chunk_slots)
    t0 = time.perf_counter()
    root = np.random.SeedSequence([int(seed), 0x51F7])
    s_alice, s_channel, s_bob = root.spawn(3)
    rng_alice, rng_bob = np.random.default_rng(s_alice), np.random.default_rng(s_bob)
    channel = Channel(cfg, rng=np.random.default_rng(s_channel), p_z_bob=p_z_bob,
                      **dict(channel_options or {}))
    K = channel.K
    sent = np.zeros((3, 2), np.int64)                     # class x Alice's basis
    detected = np.zeros(3, np.int64)
    multi_total = 0
    a_parts, b_parts = [], []
    for first in range(0, slots, chunk_slots):
        n = min(chunk_slots, slots - first)
        a_bit, a_basis, a_int = _alice_choices(n, cfg.source, rng_alice)
        codes = a_bit | (a_basis << 1) | (a_int << 2)
        sent += np.bincount(a_int.astype(np.int64) * 2 + a_basis, minlength=8)[:6].reshape(3, 2)
        det = channel.propagate(codes, first)
        # the slot Bob's time tagger assigns: the sample's slot (jitter may move a click out of its slot)
        b_slot = det.sample // K
        inside = (b_slot >= first) & (b_slot < first + n)
        slot, b_basis, b_bit, multi = _bob_decode(b_slot[inside], det.channel[inside], rng_bob)
        multi_total += int(multi.sum())
        off = slot - first
        cls = a_int[off].astype(np.int64)
        detected += np.bincount(cls, minlength=3)[:3]
        keep = b_basis == a_basis[off]
        off, slot, cls = off[keep], slot[keep], cls[keep]
        basis = b_basis[keep].astype(np.uint64)
        high = (basis << np.uint64(1)) | (cls.astype(np.uint64) << np.uint64(2))
        a_rows = np.empty((slot.size, 2), np.uint64)
        b_rows = np.empty((slot.size, 2), np.uint64)
        a_rows[:, 0] = b_rows[:, 0] = slot.astype(np.uint64)
        a_rows[:, 1] = high | a_bit[off].astype(np.uint64)
        b_rows[:, 1] = high | b_bit[keep].astype(np.uint64)
        a_parts.append(a_rows)
        b_parts.append(b_rows)
    alice = np.concatenate(a_parts) if a_parts else np.zeros((0, 2), np.uint64)
    bob = np.concatenate(b_parts) if b_parts else np.zeros((0, 2), np.uint64)
    wall = time.perf_counter() - t0
    classes = class_counts(alice, bob)
    for i, name in enumerate(CLASSES):
        c = classes[name]
        c["sent"] = int(sent[i].sum())
        c["detected"] = int(detected[i])
        c["gain"] = c["detected"] / c["sent"] if c["sent"] else 0.0
    return {"slots": slots, "seed": int(seed), "sifted": int(alice.shape[0]), "detections": int(detected.sum()),
            "multi_clicks": multi_total, "classes": classes, "transmittance": channel.transmittance,
            "key_slots_identical": True, "wall_s": wall, "slots_per_s": slots / wall if wall > 0 else math.inf,
            "model": "fast_link", "alice_rows": alice, "bob_rows": bob}


def class_counts(alice_rows: np.ndarray, bob_rows: np.ndarray) -> dict:
    """Per intensity class: ``sifted`` rows and ``errors`` (bits that differ), split by basis too."""
    a = np.asarray(alice_rows, dtype=np.uint64)
    b = np.asarray(bob_rows, dtype=np.uint64)
    if a.shape != b.shape:
        raise ValueError(f"alice_rows shape {a.shape} != bob_rows shape {b.shape}")
    ka, kb = a[:, 1] if a.size else np.zeros(0, np.uint64), b[:, 1] if b.size else np.zeros(0, np.uint64)
    cls = ((ka >> np.uint64(2)) & np.uint64(3)).astype(np.int64)
    basis = ((ka >> np.uint64(1)) & np.uint64(1)).astype(np.int64)
    err = ((ka ^ kb) & np.uint64(1)).astype(np.int64)
    out = {}
    for i, name in enumerate(CLASSES):
        sel = cls == i
        n, e = int(sel.sum()), int(err[sel].sum())
        out[name] = {"sifted": n, "errors": e, "qber": e / n if n else 0.0,
                     "sifted_z": int((sel & (basis == 0)).sum()), "sifted_x": int((sel & (basis == 1)).sum()),
                     "errors_z": int(err[sel & (basis == 0)].sum()), "errors_x": int(err[sel & (basis == 1)].sum())}
    return out


def write_sim_output(path, result: dict, cfg) -> dict:
    """Write ``result`` (from :func:`simulate`) as ``qkdlink sim --json`` does: the JSON report at
    ``path`` and the rows at ``path.with_suffix('.alice_key.npy')`` / ``'.bob_key.npy'``.
    Returns the report written (without the rows)."""
    import json
    from pathlib import Path
    base = Path(path)
    keys = {}
    for end in ("alice", "bob"):
        p = base.with_suffix(f".{end}_key.npy")
        np.save(p, np.asarray(result[f"{end}_rows"], dtype=np.uint64).reshape(-1, 2))
        keys[end] = str(p)
    report = {k: v for k, v in result.items() if not k.endswith("_rows")}
    report["config"] = cfg.to_dict()
    report["keys"] = keys
    base.write_text(json.dumps(report, indent=2, default=float) + "\n")
    return report
