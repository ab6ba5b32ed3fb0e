"""SyncMarker gateware vs sync_bits_model, marker encode/decode, CRC-8/SMBUS."""
import gc
import time
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from qkdlink.hdl.sync import (
    FRAME_LOG2_MAX, FRAME_LOG2_MIN, SYNC_MARKER_BITS, SYNC_PREAMBLE, SyncMarker, crc8_smbus,
    decode_sync_marker, encode_sync_marker, sync_bits_model,
)

TOP = 1 << 48


def test_crc8_smbus_known_vectors():
    assert crc8_smbus(b"123456789") == 0xF4          # the CRC-8/SMBUS check value
    assert crc8_smbus(b"") == 0
    assert crc8_smbus(b"\x00" * 6) == 0
    assert crc8_smbus(b"\x01") == 0x07


def _bases(rng, P, L):
    """slot_base values (multiples of P) sweeping frame heads, boundaries, 2**32 and 2**48 - F."""
    F = 1 << L
    starts = [0, F, 7 * F, (1 << 32) - F, 1 << 32, TOP - F, TOP - 2 * F]
    starts += [int(x) << L for x in rng.integers(0, 1 << (48 - L), size=3)]
    out = []
    for f in starts:
        out += range(max(f - 8 * P, 0), min(f + 96, TOP), P)            # marker and its edges
    # past the marker: offsets 72..135 (bit 7 of the offset set at 128) and random offsets
    f = starts[-1]
    out += range(f + 96, f + 140, P)
    out += [int(x) * P for x in rng.integers(0, TOP // P, size=200)]
    return out


@pytest.mark.parametrize("P", [1, 2, 4])
@pytest.mark.parametrize("L", [FRAME_LOG2_MIN, 12, FRAME_LOG2_MAX])
def test_marker_matches_model(P, L):
    rng = np.random.default_rng(L * 10 + P)
    bases = _bases(rng, P, L)
    want = sync_bits_model(np.array(bases, dtype=np.uint64)[:, None] + np.arange(P, dtype=np.uint64), L)
    want_words = [int(sum(int(b) << p for p, b in enumerate(row))) for row in want]
    dut = SyncMarker(P, L)
    got = []

    async def tb(ctx):
        for base in bases:
            ctx.set(dut.slot_base, base)
            got.append(ctx.get(dut.fire))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    bad = [(hex(b), g, w) for b, g, w in zip(bases, got, want_words) if g != w]
    assert not bad, bad[:5]
    assert any(want_words) and not all(want_words)


def test_model_marker_layout():
    L = 8
    F = 1 << L
    f = 5 * F
    bits = sync_bits_model(np.arange(f, f + F, dtype=np.uint64), L)
    pre = [(SYNC_PREAMBLE >> (15 - k)) & 1 for k in range(16)]
    assert bits[:16].tolist() == [bool(x) for x in pre]
    assert bits[16:64].tolist() == [bool((f >> (47 - k)) & 1) for k in range(48)]
    crc = crc8_smbus(f.to_bytes(6, "big"))
    assert bits[64:72].tolist() == [bool((crc >> (7 - k)) & 1) for k in range(8)]
    assert not bits[72:].any()
    assert bits.tolist() == encode_sync_marker(f).tolist() + [False] * (F - 72)
    # any shape, and the last frame below 2**48
    top = sync_bits_model(np.arange(TOP - F, TOP, dtype=np.uint64).reshape(4, -1), L)
    assert top.shape == (4, F // 4)
    assert top.ravel()[:72].tolist() == encode_sync_marker(TOP - F).tolist()


def test_decode_round_trip_and_errors():
    rng = np.random.default_rng(9)
    for L in (FRAME_LOG2_MIN, 12, FRAME_LOG2_MAX):
        for f in [0, TOP - (1 << L)] + [int(x) << L for x in rng.integers(0, 1 << (48 - L), 20)]:
            bits = sync_bits_model(np.arange(f, f + SYNC_MARKER_BITS, dtype=np.uint64), L)
            assert decode_sync_marker(bits) == f
            assert decode_sync_marker(bits.astype(int).tolist() + [1, 0, 1]) == f   # extra ignored
            for k in range(SYNC_MARKER_BITS):                     # every single-bit error caught
                flipped = bits.copy()
                flipped[k] = ~flipped[k]
                assert decode_sync_marker(flipped) is None
    assert decode_sync_marker(np.zeros(72, bool)) is None        # preamble missing
    with pytest.raises(ValueError, match="72"):
        decode_sync_marker(np.ones(71, bool))
    with pytest.raises(ValueError, match="72"):
        decode_sync_marker(np.ones((2, 72), bool))


def test_parameter_checks():
    for L in (FRAME_LOG2_MIN - 1, FRAME_LOG2_MAX + 1):
        with pytest.raises(ValueError, match="frame_log2"):
            sync_bits_model(np.arange(4, dtype=np.uint64), L)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)      # the half-built components
        with pytest.raises(ValueError, match="frame_log2"):
            SyncMarker(2, 6)
        with pytest.raises(ValueError, match="slots_per_clock"):
            SyncMarker(3, 12)
        gc.collect()
    with pytest.raises(ValueError, match="frame_start"):
        encode_sync_marker(TOP)


def test_model_speed():
    slots = np.arange(TOP - 500_000, TOP + 500_000, dtype=np.uint64) % np.uint64(TOP)
    t0 = time.perf_counter()
    bits = sync_bits_model(slots, FRAME_LOG2_MIN)
    assert time.perf_counter() - t0 < 1.0
    assert bits.shape == slots.shape
    head = TOP - 500_000 + (-(TOP - 500_000)) % 128 - (TOP - 500_000)     # first frame start
    assert bits[head:head + 72].tolist() == encode_sync_marker(TOP - 500_000 + head).tolist()
