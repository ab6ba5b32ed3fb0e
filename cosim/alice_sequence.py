"""The register sequences of a transmitter run, shared by every harness that drives Alice.

Both the cocotb testbench (Verilator) and the amaranth.sim baseline configure, start and
read Alice with exactly these writes and reads, so they run the same check.
"""
from __future__ import annotations

from ..gateware.regmap import ALICE_REGISTERS as R, COUNTER48_NAMES

__all__ = ["setup_writes", "burst_writes", "SNAP_FIRST", "SNAP_COUNT", "unpack_snapshot",
           "RUN", "STOP", "SNAPSHOT"]

_CMD = R["CMD"]
SNAP_FIRST = R["SNAP_SLOT_LO"].addr
SNAP_COUNT = R["SNAP_DIGEST_PINS"].addr - SNAP_FIRST + 1
RUN = (R["CTRL"].addr, 1 << R["CTRL"].field("RUN").offset)
STOP = (R["CTRL"].addr, 0)
SNAPSHOT = (_CMD.addr, 1 << _CMD.field("SNAPSHOT").offset)


def setup_writes(settings: dict) -> list[tuple[int, int]]:
    """(addr, value) writes that load the seed and run-time settings and clear the counters."""
    writes = [(R["SEED_LO"].addr, settings["seed"] & 0xFFFFFFFF), (R["SEED_HI"].addr, settings["seed"] >> 32)]
    for reg, key in (("PZ_Q15", "pz_q15"), ("T_SIGNAL_Q15", "t_signal_q15"), ("T_DECOY_Q15", "t_decoy_q15"),
                     ("PULSE_DELAY_SAMPLES", "pulse_delay_samples"),
                     ("PULSE_WIDTH_SAMPLES", "pulse_width_samples"),
                     ("HEALTH_RCT_CUTOFF", "rct_cutoff"), ("HEALTH_APT_CUTOFF", "apt_cutoff")):
        writes.append((R[reg].addr, settings[key]))
    writes.append((_CMD.addr, (1 << _CMD.field("LOAD_SEED").offset) | (1 << _CMD.field("CLEAR_COUNTERS").offset)))
    return writes


def burst_writes(stop_slot: int) -> list[tuple[int, int]]:
    """(addr, value) writes that set the stop slot of the next burst (RUN follows separately)."""
    return [(R["STOP_AT_SLOT_LO"].addr, stop_slot & 0xFFFFFFFF), (R["STOP_AT_SLOT_HI"].addr, stop_slot >> 32)]


def unpack_snapshot(values: list[int]) -> dict:
    """SNAP_* register values read from SNAP_FIRST -> field name -> int (48-bit ones joined)."""
    regs = {R.at(SNAP_FIRST + i).name: v for i, v in enumerate(values)}
    out = {name: regs[f"{name}_LO"] | (regs[f"{name}_HI"] << 32) for name in COUNTER48_NAMES}
    for name in ("SNAP_RCT_FAILS", "SNAP_APT_FAILS", "SNAP_DIGEST_SYMBOLS", "SNAP_DIGEST_PINS"):
        out[name] = regs[name]
    return out
