"""Register maps of the endpoint gateware: the one source of truth (DESIGN contract 1).

The register bank gateware (:mod:`qkdlink.hdl.regbank`), the reference models, the host
driver and ``docs/registers.md`` are all generated from, or checked against, these tables.
Registers are 32 bits wide on the bus; a register narrower than 32 bits reads its upper
bits as zero and ignores them on write. 48-bit quantities are split into ``*_LO`` (bits
0..31) and ``*_HI`` (bits 32..47).
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Field", "Register", "RegisterMap", "ACCESS_RW", "ACCESS_RO", "ACCESS_STROBE",
    "ALICE_REGISTERS", "BOB_REGISTERS", "ID_ALICE", "ID_BOB", "REGMAP_VERSION", "COUNTER48_NAMES",
    "SIFT_COUNTER_NAMES", "BOB_COUNTER48_NAMES", "BOB_COUNTER32_NAMES", "HISTOGRAM_BINS",
]

ACCESS_RW = "rw"          # written by the host, read back
ACCESS_RO = "ro"          # driven by the gateware
ACCESS_STROBE = "strobe"  # write-only: the written bits pulse for one clock; reads as 0

ID_ALICE = 0x514B4441     # "QKDA"
ID_BOB = 0x514B4442       # "QKDB"
REGMAP_VERSION = 1


@dataclass(frozen=True)
class Field:
    """A named bit field inside a register (``offset``/``width`` in bits)."""
    name: str
    offset: int
    width: int
    doc: str


@dataclass(frozen=True)
class Register:
    """One 32-bit bus register; ``width`` is how many of its low bits exist."""
    name: str
    addr: int
    access: str
    width: int
    doc: str
    reset: int = 0
    fields: tuple[Field, ...] = ()

    def __post_init__(self):
        if self.access not in (ACCESS_RW, ACCESS_RO, ACCESS_STROBE):
            raise ValueError(f"register {self.name}: unknown access {self.access!r}")
        if not 1 <= self.width <= 32:
            raise ValueError(f"register {self.name}: width {self.width} outside 1..32")
        if not 0 <= self.reset < (1 << self.width):
            raise ValueError(f"register {self.name}: reset {self.reset:#x} does not fit {self.width} bits")
        for f in self.fields:
            if f.offset + f.width > self.width:
                raise ValueError(f"register {self.name}: field {f.name} exceeds width {self.width}")

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}")


@dataclass(frozen=True)
class RegisterMap:
    """An ordered set of registers with unique names and addresses."""
    name: str
    registers: tuple[Register, ...]
    _by_name: dict = field(init=False, repr=False, compare=False)
    _by_addr: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        by_name, by_addr = {}, {}
        for r in self.registers:
            if r.name in by_name:
                raise ValueError(f"register map {self.name}: duplicate name {r.name}")
            if r.addr in by_addr:
                raise ValueError(f"register map {self.name}: {r.name} and {by_addr[r.addr].name} share address {r.addr:#06x}")
            if not 0 <= r.addr < 0x10000:
                raise ValueError(f"register map {self.name}: {r.name} address {r.addr:#x} outside 16 bits")
            by_name[r.name] = r
            by_addr[r.addr] = r
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_by_addr", by_addr)

    def __iter__(self):
        return iter(self.registers)

    def __getitem__(self, name: str) -> Register:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"register map {self.name} has no register {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def at(self, addr: int) -> Register | None:
        """The register at bus address ``addr``, or None."""
        return self._by_addr.get(addr)

    def to_markdown(self) -> str:
        """A Markdown table of the map, for docs/registers.md."""
        lines = [f"### {self.name}", "", "| addr | name | access | width | reset | description |",
                 "|---|---|---|---|---|---|"]
        for r in self.registers:
            doc = r.doc
            if r.fields:
                doc += "<br>" + "<br>".join(
                    f"`[{f.offset + f.width - 1}:{f.offset}]` {f.name}: {f.doc}" if f.width > 1
                    else f"`[{f.offset}]` {f.name}: {f.doc}" for f in r.fields)
            lines.append(f"| `{r.addr:#06x}` | {r.name} | {r.access} | {r.width} | `{r.reset:#x}` | {doc} |")
        return "\n".join(lines) + "\n"


def _counter48(name: str, addr: int, doc: str) -> tuple[Register, Register]:
    return (Register(f"{name}_LO", addr, ACCESS_RO, 32, f"{doc} (bits 31..0, snapshot)"),
            Register(f"{name}_HI", addr + 1, ACCESS_RO, 16, f"{doc} (bits 47..32, snapshot)"))


# Common identification and scratch registers.
_COMMON = (
    Register("ID", 0x0000, ACCESS_RO, 32, "endpoint identifier: 0x514B4441 'QKDA' (Alice), 0x514B4442 'QKDB' (Bob)"),
    Register("VERSION", 0x0001, ACCESS_RO, 32, "register map version"),
    Register("BUILD", 0x0002, ACCESS_RO, 32, "build parameters", fields=(
        Field("SAMPLES_PER_CLOCK", 0, 4, "S, output samples per system clock"),
        Field("SLOTS_PER_CLOCK", 4, 4, "P, pulse slots per system clock"),
        Field("LOG2_CHOICE_DEPTH", 8, 5, "log2 of the choice-memory depth in slots"),
        Field("FRAME_LOG2", 13, 5, "log2 of the sync frame length in slots"),
        Field("HAS_PRNG", 24, 1, "the simulation PRNG is built in: NOT a secure configuration"),
        Field("HAS_QRNG", 25, 1, "the external QRNG input is built in"),
        Field("HAS_DIGESTS", 26, 1, "the CRC-32 digests behind SNAP_DIGEST_* are built in (else those read 0)"),
        Field("HAS_HISTOGRAM", 27, 1, "Bob: the fine-time histograms behind HIST_* are built in (else those "
                                      "read 0); Alice: 0"),
    )),
    Register("SCRATCH", 0x0003, ACCESS_RW, 32, "free scratch register for link tests"),
)

# Host-link statistics, kept by the link block itself (live, not snapshot).
_LINK = tuple(Register(name, 0x00E0 + i, ACCESS_RO, 32, doc) for i, (name, doc) in enumerate((
    ("RX_FRAMES", "valid frames received"),
    ("RX_CRC_ERRORS", "frames dropped for a CRC mismatch"),
    ("RX_FRAMING_ERRORS", "frames dropped for a bad escape sequence"),
    ("RX_OVERSIZE", "frames dropped for exceeding the receive buffer"),
    ("RX_TRUNCATED", "frames dropped for being shorter than type + seq + CRC"),
    ("RX_UNKNOWN_TYPE", "valid frames with an unknown message type (NAKed)"),
    ("RX_BAD_LENGTH", "valid frames with a payload length wrong for their type (NAKed)"),
    ("RX_SEQ_GAPS", "valid frames whose sequence number did not follow the previous one"),
    ("TX_FRAMES", "frames sent"),
)))

# Names of Alice's 48-bit snapshot counters, in address order (each is *_LO, *_HI).
COUNTER48_NAMES = (
    "SNAP_SLOT", "SNAP_SENT_SIGNAL_Z", "SNAP_SENT_SIGNAL_X", "SNAP_SENT_DECOY_Z",
    "SNAP_SENT_DECOY_X", "SNAP_SENT_VACUUM_Z", "SNAP_SENT_VACUUM_X", "SNAP_BLANK",
    "SNAP_UNDERRUN", "SNAP_CHOICE_LOST",
)
_COUNTER48_DOCS = (
    "slot counter: index of the next slot", "slots sent: signal intensity, Z basis",
    "slots sent: signal intensity, X basis", "slots sent: decoy intensity, Z basis",
    "slots sent: decoy intensity, X basis", "slots sent: vacuum intensity, Z basis",
    "slots sent: vacuum intensity, X basis", "blank slots (stopped by alarm or underrun)",
    "slots blanked for lack of QRNG entropy (underrun)", "choice-memory queries answered LOST (overrun)",
)

# Sifting counters, per intensity class and basis (both ends; docs/hostlink.md).
SIFT_COUNTER_NAMES = tuple(f"SNAP_SIFT_{kind}_{i}_{b}" for kind in ("DETECTED", "SIFTED")
                           for i in ("SIGNAL", "DECOY", "VACUUM") for b in "ZX")
_SIFT_COUNTERS = tuple((n, ("detections" if "DETECTED" in n else "sifted slots") + ": "
                        + n.split("_")[3].lower() + " intensity, " + n.split("_")[4] + " basis")
                       for n in SIFT_COUNTER_NAMES)

ALICE_REGISTERS = RegisterMap("alice", _COMMON + (
    Register("CTRL", 0x0010, ACCESS_RW, 2, "control", fields=(
        Field("RUN", 0, 1, "emit slots while set and the slot counter is below a non-zero STOP_AT_SLOT"),
        Field("SOURCE_QRNG", 1, 1, "entropy from the external QRNG input instead of the PRNG"),
    )),
    Register("CMD", 0x0011, ACCESS_STROBE, 4, "commands (write 1 to trigger)", fields=(
        Field("SNAPSHOT", 0, 1, "copy slot counter, counters and digests into the SNAP_* registers"),
        Field("CLEAR_COUNTERS", 1, 1, "zero the slot counter, counters and digests"),
        Field("CLEAR_ALARM", 2, 1, "clear the sticky entropy health alarms and restart the tests"),
        Field("LOAD_SEED", 3, 1, "load the PRNG lanes from SEED_LO/SEED_HI"),
    )),
    Register("STATUS", 0x0012, ACCESS_RO, 3, "status", fields=(
        Field("RUNNING", 0, 1, "slots are being emitted"),
        Field("ALARM_RCT", 1, 1, "sticky: repetition count test fired"),
        Field("ALARM_APT", 2, 1, "sticky: adaptive proportion test fired"),
    )),
    Register("SEED_LO", 0x0014, ACCESS_RW, 32, "PRNG seed bits 31..0"),
    Register("SEED_HI", 0x0015, ACCESS_RW, 32, "PRNG seed bits 63..32"),
    Register("STOP_AT_SLOT_LO", 0x0016, ACCESS_RW, 32, "stop when the slot counter reaches this (0 = never), bits 31..0"),
    Register("STOP_AT_SLOT_HI", 0x0017, ACCESS_RW, 16, "stop slot, bits 47..32"),
    Register("PZ_Q15", 0x0020, ACCESS_RW, 16, "P(Z basis) x 2^15, 0..32768", reset=16384),
    Register("T_SIGNAL_Q15", 0x0021, ACCESS_RW, 16, "P(signal) x 2^15", reset=16384),
    Register("T_DECOY_Q15", 0x0022, ACCESS_RW, 16, "P(decoy) x 2^15 (vacuum gets the rest)", reset=8192),
    Register("PULSE_DELAY_SAMPLES", 0x0023, ACCESS_RW, 4, "pulse delay from the slot start, samples (0..S)"),
    Register("PULSE_WIDTH_SAMPLES", 0x0024, ACCESS_RW, 4, "pulse width, samples (1..S/P)", reset=1),
    Register("HEALTH_RCT_CUTOFF", 0x0025, ACCESS_RW, 16, "SP 800-90B repetition count cutoff C", reset=8),
    Register("HEALTH_APT_CUTOFF", 0x0026, ACCESS_RW, 16, "SP 800-90B adaptive proportion cutoff C (window 512)", reset=36),
) + tuple(r for i, (n, d) in enumerate(zip(COUNTER48_NAMES, _COUNTER48_DOCS))
          for r in _counter48(n, 0x0040 + 2 * i, d)) + (
    Register("SNAP_RCT_FAILS", 0x0054, ACCESS_RO, 32, "repetition count test fires (snapshot)"),
    Register("SNAP_APT_FAILS", 0x0055, ACCESS_RO, 32, "adaptive proportion test fires (snapshot)"),
    Register("SNAP_DIGEST_SYMBOLS", 0x0056, ACCESS_RO, 32, "CRC-32 of symbols and sync bits (snapshot)"),
    Register("SNAP_DIGEST_PINS", 0x0057, ACCESS_RO, 32, "CRC-32 of laser, sync and modulator pin words (snapshot)"),
) + tuple(r for i, (n, d) in enumerate(_SIFT_COUNTERS + (("SNAP_SIFT_LOST", "sift queries answered LOST or FUTURE"),))
          for r in _counter48(n, 0x0070 + 2 * i, d)) + _LINK)


# ---------------------------------------------------------------------------- Bob
HISTOGRAM_BINS = 8  # fine-time bins per detector (K = S/P <= 8 are used)
_DETECTORS = ("H", "V", "D", "A")

BOB_COUNTER48_NAMES = (
    "SNAP_LOCAL_SLOT", "SNAP_DETECTED_Z", "SNAP_DETECTED_X", "SNAP_DOUBLE", "SNAP_CROSS",
    "SNAP_SUPPRESSED", "SNAP_OUT_OF_GATE", "SNAP_RECORDS_DROPPED", "SNAP_UNLOCKED_DETECTIONS",
) + SIFT_COUNTER_NAMES + ("SNAP_SIFT_UNANSWERED", "SNAP_SIFT_UNMATCHED")
_BOB_COUNTER48_DOCS = (
    "local slot counter", "detections in the Z basis (H/V)", "detections in the X basis (D/A)",
    "double clicks (several detectors of one basis)", "cross-basis multi-clicks",
    "detector edges suppressed by the dead time", "live detector edges outside the gate",
    "detection records dropped (record FIFO full)", "detections while the sync was not locked (no record)",
) + tuple(d for _, d in _SIFT_COUNTERS) + (
    "pending detections dropped without an answer", "sift answers with no pending detection")
BOB_COUNTER32_NAMES = ("SNAP_LOCK_ACQUIRED", "SNAP_LOCK_LOST", "SNAP_SYNC_GOOD", "SNAP_SYNC_MISMATCH",
                       "SNAP_DIGEST_RECORDS", "SNAP_SYNC_SLIPS")
_BOB_COUNTER32_DOCS = ("sync locks acquired", "sync locks lost", "sync markers that confirmed the lock",
                       "sync markers with another offset (beyond SYNC_TRACK_SLOTS) while locked",
                       "CRC-32 of every row of detection records produced (before the FIFO)",
                       "sync markers followed as a clock-offset slip (offset changed by 1..SYNC_TRACK_SLOTS)")

BOB_REGISTERS = RegisterMap("bob", _COMMON + (
    Register("CTRL", 0x0010, ACCESS_RW, 3, "control", fields=(
        Field("RUN", 0, 1, "time-tag detector and sync inputs while set"),
        Field("RECORDS", 1, 1, "send detection records to the host (and into the pending sift queue)"),
        Field("RECORD_BITS", 2, 1, "include raw bit values in records: calibration only, never for key"),
    )),
    Register("CMD", 0x0011, ACCESS_STROBE, 6, "commands (write 1 to trigger)", fields=(
        Field("SNAPSHOT", 0, 1, "copy counters, digest and histograms into the SNAP_* and HIST_* registers"),
        Field("CLEAR_COUNTERS", 1, 1, "zero the counters and the digest (the local slot counter keeps running)"),
        Field("CLEAR_HISTOGRAM", 2, 1, "zero the fine-time histograms"),
        Field("RELOCK", 3, 1, "drop the sync lock and acquire again"),
        Field("CLEAR_OVERFLOW", 4, 1, "clear the sticky record-FIFO overflow flag"),
        Field("LOAD_SEED", 5, 1, "load the squashing PRNG from SEED_LO/SEED_HI"),
    )),
    Register("STATUS", 0x0012, ACCESS_RO, 3, "status", fields=(
        Field("RUNNING", 0, 1, "inputs are being tagged"),
        Field("LOCKED", 1, 1, "the sync receiver is locked to Alice's slot numbering"),
        Field("OVERFLOW", 2, 1, "sticky: detection records were dropped"),
    )),
    Register("SEED_LO", 0x0014, ACCESS_RW, 32, "squashing PRNG seed bits 31..0"),
    Register("SEED_HI", 0x0015, ACCESS_RW, 32, "squashing PRNG seed bits 63..32"),
    Register("GATE_OFFSET_SAMPLES", 0x0020, ACCESS_RW, 4, "gate start within the slot, samples"),
    Register("GATE_WIDTH_SAMPLES", 0x0021, ACCESS_RW, 4, "gate width, samples", reset=8),
    Register("DEAD_TIME_SAMPLES", 0x0022, ACCESS_RW, 16, "dead time after a click, samples (at least S)"),
) + tuple(Register(f"DELAY_{d}_SAMPLES", 0x0023 + i, ACCESS_RW, 8, f"fine delay of detector {d}, samples")
          for i, d in enumerate(_DETECTORS)) + (
    Register("DELAY_SYNC_SAMPLES", 0x0027, ACCESS_RW, 8, "fine delay of the sync input, samples"),
    Register("SYNC_LOSS_FRAMES", 0x0028, ACCESS_RW, 8, "sync frames without a good marker before loss of lock", reset=3),
    Register("SYNC_TRACK_SLOTS", 0x0029, ACCESS_RW, 8, "largest offset change (slots) followed as a clock-offset slip "
             "while locked; larger ones are mismatches; 0 = no tracking", reset=4),
    Register("SYNC_OFFSET_LO", 0x0030, ACCESS_RO, 32, "Alice slot = local slot + offset (mod 2^48), bits 31..0 (live)"),
    Register("SYNC_OFFSET_HI", 0x0031, ACCESS_RO, 16, "sync offset bits 47..32 (live)"),
    Register("SYNC_DRIFT_SLOTS", 0x0032, ACCESS_RO, 32, "sum of the slips since the lock was acquired, slots, "
             "two's complement (live; < 0: Bob's clock is fast)"),
) + tuple(r for i, (n, d) in enumerate(zip(BOB_COUNTER48_NAMES, _BOB_COUNTER48_DOCS))
          for r in _counter48(n, 0x0040 + 2 * i, d))
  + tuple(Register(n, 0x0090 + i, ACCESS_RO, 32, d + " (snapshot)")
          for i, (n, d) in enumerate(zip(BOB_COUNTER32_NAMES, _BOB_COUNTER32_DOCS)))
  + tuple(Register(f"HIST_{d}_{b}", 0x0100 + HISTOGRAM_BINS * i + b, ACCESS_RO, 32,
                   f"live edges of detector {d} with fine time {b} (snapshot)")
          for i, d in enumerate(_DETECTORS) for b in range(HISTOGRAM_BINS))
  + _LINK)
