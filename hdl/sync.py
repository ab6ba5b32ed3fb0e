"""Sync marker: one sync bit per slot, a 72-bit marker at the start of every frame.

See ``docs/transmitter.md`` ("Sync marker"). Frame of ``F = 2**frame_log2`` slots; slot ``n``
has offset ``o = n mod F`` in the frame starting at slot ``f = n - o``:

* ``o < 16``: bit ``15 - o`` of the preamble ``0xF9A8`` (Barker-13 + 000, MSB first);
* ``16 <= o < 64``: bit ``63 - o`` of ``f`` (48 bits, MSB first);
* ``64 <= o < 72``: bit ``71 - o`` of ``crc8_smbus(f as 6 bytes big-endian)``;
* otherwise 0.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "SYNC_PREAMBLE", "SYNC_PREAMBLE_BITS", "SYNC_TIMESTAMP_BITS", "SYNC_CRC_BITS",
    "SYNC_MARKER_BITS", "FRAME_LOG2_MIN", "FRAME_LOG2_MAX", "SLOT_BITS",
    "crc8_smbus", "check_frame_log2", "SyncMarker", "sync_bits_model", "encode_sync_marker", "decode_sync_marker",
]

SYNC_PREAMBLE = 0xF9A8
SYNC_PREAMBLE_BITS = 16
SYNC_TIMESTAMP_BITS = 48
SYNC_CRC_BITS = 8
SYNC_MARKER_BITS = SYNC_PREAMBLE_BITS + SYNC_TIMESTAMP_BITS + SYNC_CRC_BITS   # 72
FRAME_LOG2_MIN = 7
FRAME_LOG2_MAX = 24
SLOT_BITS = 48                 # width of a slot index

_CRC8_POLY = 0x07


def _crc8_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint8)
    for b in range(256):
        c = b
        for _ in range(8):
            c = ((c << 1) ^ _CRC8_POLY) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        table[b] = c
    return table


_CRC8_TABLE = _crc8_table()


def check_frame_log2(frame_log2: int) -> int:
    """Validate the sync frame length exponent; returns it."""
    if not FRAME_LOG2_MIN <= frame_log2 <= FRAME_LOG2_MAX:
        raise ValueError(f"frame_log2 = {frame_log2!r}: must be in [{FRAME_LOG2_MIN}, {FRAME_LOG2_MAX}]")
    return frame_log2


def crc8_smbus(data: bytes) -> int:
    """CRC-8/SMBUS: poly 0x07, init 0, no reflection, no xorout (``b"123456789"`` -> 0xF4)."""
    crc = 0
    for byte in bytes(data):
        crc = int(_CRC8_TABLE[crc ^ byte])
    return crc


def _crc8_of_slot_indices(f: np.ndarray) -> np.ndarray:
    """Vectorised ``crc8_smbus(f.to_bytes(6, "big"))`` for a uint64 array."""
    crc = np.zeros(f.shape, dtype=np.uint8)
    for k in range(5, -1, -1):
        byte = ((f >> np.uint64(8 * k)) & np.uint64(0xFF)).astype(np.uint8)
        crc = _CRC8_TABLE[crc ^ byte]
    return crc


def _crc8_matrix() -> list[int]:
    """Column ``i`` = CRC of slot index ``1 << i`` (the CRC is linear: init 0, no xorout)."""
    return [crc8_smbus((1 << i).to_bytes(6, "big")) for i in range(SLOT_BITS)]


def _check_frame_log2(frame_log2) -> int:
    if int(frame_log2) != frame_log2 or not FRAME_LOG2_MIN <= frame_log2 <= FRAME_LOG2_MAX:
        raise ValueError(f"frame_log2 = {frame_log2!r} outside [{FRAME_LOG2_MIN}, {FRAME_LOG2_MAX}]")
    return int(frame_log2)


class SyncMarker(wiring.Component):
    """Combinational sync bits of the ``P`` slots of one clock.

    A pure function of ``slot_base``: the frame start is ``slot_base`` with its low
    ``frame_log2`` bits cleared (all lanes share it, as ``P`` divides ``F``), its CRC-8 is an
    XOR tree over those bits, and each lane selects one bit of the 72-bit marker by its offset.

    Ports
    -----
    slot_base : In(48)
        Slot index of lane 0 (a multiple of ``P``).
    fire : Out(P)
        Bit ``p``: sync bit of slot ``slot_base + p``.
    """

    def __init__(self, slots_per_clock: int, frame_log2: int = 12):
        if slots_per_clock not in (1, 2, 4):
            raise ValueError(f"slots_per_clock must be 1, 2 or 4, not {slots_per_clock!r}")
        self.P = slots_per_clock
        self.frame_log2 = _check_frame_log2(frame_log2)
        super().__init__({
            "slot_base": In(SLOT_BITS),
            "fire": Out(slots_per_clock),
        })

    def elaborate(self, platform):
        m = Module()
        P, L = self.P, self.frame_log2
        lp = P.bit_length() - 1

        # Frame start (low L bits zero) and its CRC-8 as an XOR tree of the upper bits.
        frame = Signal(SLOT_BITS)
        m.d.comb += frame.eq(Cat(Const(0, L), self.slot_base[L:]))
        cols = _crc8_matrix()
        crc = Signal(SYNC_CRC_BITS)
        for j in range(SYNC_CRC_BITS):
            taps = [self.slot_base[i] for i in range(L, SLOT_BITS) if (cols[i] >> j) & 1]
            m.d.comb += crc[j].eq(Cat(*taps).xor() if taps else 0)

        # marker bit o = sync bit at offset o (o < 72), padded with zeros to 128 = 2**7.
        marker = Cat(
            *(Const((SYNC_PREAMBLE >> (SYNC_PREAMBLE_BITS - 1 - k)) & 1, 1)
              for k in range(SYNC_PREAMBLE_BITS)),
            *(frame[SLOT_BITS - 1 - k] for k in range(SYNC_TIMESTAMP_BITS)),
            *(crc[SYNC_CRC_BITS - 1 - k] for k in range(SYNC_CRC_BITS)),
            Const(0, 128 - SYNC_MARKER_BITS))
        in_head = (self.slot_base[7:L] == 0) if L > 7 else Const(1, 1)
        for p in range(P):
            offset = Cat(Const(p, lp), self.slot_base[lp:7]) if lp else self.slot_base[0:7]
            m.d.comb += self.fire[p].eq(in_head & marker.bit_select(offset, 1))
        return m


def sync_bits_model(slots, frame_log2: int) -> np.ndarray:
    """Sync bit of every slot index in ``slots`` (uint64 array, any shape) -> bool array."""
    L = _check_frame_log2(frame_log2)
    n = np.asarray(slots, dtype=np.uint64)
    o = (n & np.uint64((1 << L) - 1)).astype(np.int64)
    f = n - o.astype(np.uint64)
    crc = _crc8_of_slot_indices(f).astype(np.uint64)
    pre = (np.uint64(SYNC_PREAMBLE) >> np.clip(15 - o, 0, 15).astype(np.uint64)) & np.uint64(1)
    ts = (f >> np.clip(63 - o, 0, 47).astype(np.uint64)) & np.uint64(1)
    cb = (crc >> np.clip(71 - o, 0, 7).astype(np.uint64)) & np.uint64(1)
    bit = np.where(o < 16, pre, np.where(o < 64, ts, np.where(o < SYNC_MARKER_BITS, cb, 0)))
    return bit.astype(bool)


def encode_sync_marker(frame_start: int) -> np.ndarray:
    """The 72 sync bits (bool, in slot order) at the start of the frame beginning at ``frame_start``."""
    f = int(frame_start)
    if not 0 <= f < (1 << SLOT_BITS):
        raise ValueError(f"frame_start = {frame_start!r} outside [0, 2**48)")
    word = (SYNC_PREAMBLE << 56) | (f << 8) | crc8_smbus(f.to_bytes(6, "big"))
    return np.array([(word >> (SYNC_MARKER_BITS - 1 - k)) & 1 for k in range(SYNC_MARKER_BITS)],
                    dtype=bool)


def decode_sync_marker(bits) -> int | None:
    """Inverse of the marker: from the first 72 sync bits starting at the preamble, in slot
    order, return the frame-start slot index, or None if the preamble or CRC-8 does not match.

    ``bits``: 1-D sequence of at least 72 values (0/1 or bool); later values are ignored.
    """
    b = np.asarray(bits).astype(bool).ravel() if np.ndim(bits) == 1 else None
    if b is None or b.size < SYNC_MARKER_BITS:
        raise ValueError(f"decode_sync_marker needs a 1-D sequence of at least {SYNC_MARKER_BITS} "
                         f"bits, got shape {np.shape(bits)}")
    word = 0
    for v in b[:SYNC_MARKER_BITS]:
        word = (word << 1) | int(v)
    preamble = word >> 56
    f = (word >> 8) & ((1 << SLOT_BITS) - 1)
    crc = word & 0xFF
    if preamble != SYNC_PREAMBLE or crc != crc8_smbus(f.to_bytes(6, "big")):
        return None
    return f
