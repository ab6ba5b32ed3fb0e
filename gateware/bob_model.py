"""Bit-exact reference model of the Bob top, composed from the block models.

Input: the detector and sync sample words of ``n`` running clocks (one contiguous run from
reset, as the co-simulation replays them while ``running`` is high), the build parameters
and the register settings. Output: every record row produced, the records in host order,
the counters and the record digest that the SNAPSHOT registers must hold.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, asdict, field

import numpy as np

from ..hdl.timetagger import timetagger_model
from ..hdl.sync_sampler import sync_sampler_model
from ..hdl.sync_rx import sync_rx_model
from ..hdl.detection import combine_model
from ..hdl.squash_rng import squash_bits_model
from ..hdl.histogram import histogram_model
from ..hdl.record_fifo import pack_records
from .bob import BobParams, record_digest_bits
from .regmap import BOB_REGISTERS, HISTOGRAM_BINS

__all__ = ["BobSettings", "BobRun", "bob_model"]

_SLOT_MASK = (1 << 48) - 1


@dataclass(frozen=True)
class BobSettings:
    """Run-time register settings of a receiver run (register units)."""
    seed: int = 1
    gate_offset_samples: int = 0
    gate_width_samples: int = BOB_REGISTERS["GATE_WIDTH_SAMPLES"].reset
    dead_time_samples: int = 0
    delay_samples: tuple = (0, 0, 0, 0)
    delay_sync_samples: int = 0
    sync_loss_frames: int = BOB_REGISTERS["SYNC_LOSS_FRAMES"].reset
    sync_track_slots: int = BOB_REGISTERS["SYNC_TRACK_SLOTS"].reset

    def as_dict(self) -> dict:
        d = asdict(self)
        d["delay_samples"] = list(self.delay_samples)
        return d


@dataclass
class BobRun:
    """What the model says a run produced."""
    records: np.ndarray        # (m,) uint64 records in the order the host receives them (no gap bits)
    rows_records: np.ndarray   # (n, P) uint64 record per lane (0 where no record)
    rows_mask: np.ndarray      # (n, P) bool lanes with a record
    locked: np.ndarray         # (n,) bool
    snapshot: dict = field(default_factory=dict)   # SNAP_* name -> int
    histogram: np.ndarray | None = None            # (4, HISTOGRAM_BINS): HIST_* after a SNAPSHOT at the end


def bob_model(params: BobParams, settings: BobSettings, det: np.ndarray, sync: np.ndarray) -> BobRun:
    """Model ``n`` running clocks of detector words ``det`` (n, 4) and sync words ``sync`` (n,)."""
    S, P = params.samples_per_clock, params.slots_per_clock
    det = np.asarray(det, dtype=np.uint64)
    sync = np.asarray(sync, dtype=np.uint64)
    n = det.shape[0]
    tag = timetagger_model(S, P, det, list(settings.delay_samples), settings.gate_offset_samples,
                           settings.gate_width_samples, settings.dead_time_samples, params.max_delay_samples)
    bits = sync_sampler_model(S, P, sync, settings.delay_sync_samples, params.max_delay_samples)
    srx = sync_rx_model(P, params.frame_log2, bits, settings.sync_loss_frames,
                        track_slots=settings.sync_track_slots)
    random = squash_bits_model(settings.seed, n, 2 * P).astype(np.uint64)
    dets = combine_model(tag["click"], tag["lane"], tag["fine"], random, P)

    detected = dets["detected"].astype(bool)
    locked = srx["locked"].astype(bool)
    mask = detected & locked[:, None]
    local = (np.arange(n, dtype=np.uint64) * np.uint64(P))[:, None] + np.arange(P, dtype=np.uint64)[None, :]
    slots = (local + srx["offset"].astype(np.uint64)[:, None]) & np.uint64(_SLOT_MASK)
    multi = dets["double"].astype(bool) | dets["cross"].astype(bool)
    recs = pack_records(slots, dets["basis"], dets["bit"], dets["fine"], multi)
    recs = np.where(mask, recs, np.uint64(0)).astype(np.uint64)

    rows = np.nonzero(mask.any(axis=1))[0]
    nbytes = record_digest_bits(P) // 8
    row_bytes = np.zeros((rows.size, nbytes), np.uint8)
    row_bytes[:, :8 * P] = np.ascontiguousarray(recs[rows].astype("<u8")).view(np.uint8).reshape(rows.size, 8 * P)
    row_bytes[:, 8 * P] = (mask[rows].astype(np.uint8) << np.arange(P, dtype=np.uint8)).sum(axis=1)
    digest = zlib.crc32(row_bytes.tobytes()) if params.has_digests else 0

    basis = dets["basis"].astype(bool)
    snap = {
        "SNAP_LOCAL_SLOT": n * P,
        "SNAP_DETECTED_Z": int((detected & ~basis).sum()),
        "SNAP_DETECTED_X": int((detected & basis).sum()),
        "SNAP_DOUBLE": int((detected & dets["double"].astype(bool)).sum()),
        "SNAP_CROSS": int((detected & dets["cross"].astype(bool)).sum()),
        "SNAP_SUPPRESSED": int(tag["suppressed"].sum()),
        "SNAP_OUT_OF_GATE": int(tag["out_of_gate"].sum()),
        "SNAP_UNLOCKED_DETECTIONS": int((detected & ~locked[:, None]).sum()),
        "SNAP_LOCK_ACQUIRED": int(srx["lock_acquired"].sum()),
        "SNAP_LOCK_LOST": int(srx["lock_lost"].sum()),
        "SNAP_SYNC_GOOD": int(srx["marker_good"].sum()),
        "SNAP_SYNC_MISMATCH": int(srx["marker_mismatch"].sum()),
        "SNAP_SYNC_SLIPS": int(srx["marker_slip"].sum()),
        "SNAP_DIGEST_RECORDS": digest,
    }
    hist = histogram_model(tag["live"], tag["fine"], HISTOGRAM_BINS)
    if not params.has_histogram:
        hist = np.zeros_like(hist)
    return BobRun(records=recs[mask], rows_records=recs, rows_mask=mask, locked=locked,
                  snapshot=snap, histogram=hist)
