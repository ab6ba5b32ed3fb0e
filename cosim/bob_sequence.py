"""The register writes that configure Bob for a run, shared by every harness that drives Bob."""
from __future__ import annotations

from ..gateware.regmap import BOB_REGISTERS as R

__all__ = ["setup_writes"]


def setup_writes(settings: dict) -> list[tuple[int, int]]:
    """(addr, value) writes: seed, gate, dead time, delays, sync loss; then LOAD_SEED and
    CLEAR_COUNTERS | CLEAR_HISTOGRAM. ``settings`` is :meth:`BobSettings.as_dict`."""
    writes = [("SEED_LO", settings["seed"] & 0xFFFFFFFF), ("SEED_HI", settings["seed"] >> 32),
              ("GATE_OFFSET_SAMPLES", settings["gate_offset_samples"]),
              ("GATE_WIDTH_SAMPLES", settings["gate_width_samples"]),
              ("DEAD_TIME_SAMPLES", settings["dead_time_samples"]),
              ("DELAY_SYNC_SAMPLES", settings["delay_sync_samples"]),
              ("SYNC_LOSS_FRAMES", settings["sync_loss_frames"]),
              ("SYNC_TRACK_SLOTS", settings.get("sync_track_slots", R["SYNC_TRACK_SLOTS"].reset))]
    writes += [(f"DELAY_{d}_SAMPLES", v) for d, v in zip("HVDA", settings["delay_samples"])]
    cmd = R["CMD"]
    strobe = sum(1 << cmd.field(f).offset for f in ("LOAD_SEED", "CLEAR_COUNTERS", "CLEAR_HISTOGRAM"))
    return [(R[name].addr, value) for name, value in writes] + [(cmd.addr, strobe)]
