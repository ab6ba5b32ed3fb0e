"""Authentication: GF(2^128) and the polynomial hash against slow references, the key pool's
exactly-once hand-out, and sessions that reject every tampered frame and abort cleanly."""
import collections
import copy
import logging
import math
import pickle
import random

import numpy as np
import pytest

from qkdlink.host import auth
from qkdlink.host.auth import (ALICE_TO_BOB, BOB_TO_ALICE, DEFAULT_TAG_BITS, HEADER_BYTES, STREAMS,
                               AuthenticationError, Authenticator, KeyExhausted, KeyPool, Reject,
                               SessionAborted, SessionClosed, epsilon_per_message, gf128_mul,
                               hash_blocks, poly_hash, tag_bits_for)

SID = bytes(range(16))
T = DEFAULT_TAG_BITS
TB = T // 8


# -- slow references, written independently of the module ---------------------------------------

def ref_mul(a, b):
    """Shift-and-add multiplication in GF(2)[x]/(x^128 + x^7 + x^2 + x + 1), reducing every step."""
    r = 0
    for i in range(128):
        if (b >> i) & 1:
            r ^= a
        a <<= 1
        if a >> 128:
            a ^= (1 << 128) | 0x87
    return r


def ref_pow(a, e):
    r = 1
    while e:
        if e & 1:
            r = ref_mul(r, a)
        a = ref_mul(a, a)
        e >>= 1
    return r


def ref_hash(key, data):
    """sum_i B_i key^(n+2-i) + (8 len) key, term by term."""
    padded = data + b"\0" * (-len(data) % 16)
    blocks = [int.from_bytes(padded[i:i + 16], "big") for i in range(0, len(padded), 16)]
    n = len(blocks)
    h = ref_mul(8 * len(data), key)
    for i, b in enumerate(blocks, start=1):
        h ^= ref_mul(b, ref_pow(key, n + 2 - i))
    return h


def reflect(x):
    return int(f"{x:0128b}"[::-1], 2)


# -- helpers --------------------------------------------------------------------------------------

def preshared(n_bytes, seed=1):
    return np.random.default_rng(seed).bytes(n_bytes)


def pools(n_bytes=1 << 16, seed=1, audit=True):
    key = preshared(n_bytes, seed)
    return KeyPool(key, audit=audit), KeyPool(key, audit=audit)


def resync(pa, pb):
    """After an aborted session: both ends move every stream to the larger position."""
    for s in STREAMS:
        p = max(pa.position(s), pb.position(s))
        pa.discard_to(s, p)
        pb.discard_to(s, p)


def session(pa, pb, sid=SID, **kw):
    return Authenticator("alice", pa, sid, **kw), Authenticator("bob", pb, sid, **kw)


def rejected(authenticator, frame):
    with pytest.raises(AuthenticationError) as e:
        authenticator.open(frame)
    assert authenticator.state == "aborted"
    return e.value.reason


# -- the field and the hash -----------------------------------------------------------------------

def test_gf128_mul_matches_bitwise_reference():
    rng = random.Random(11)
    edge = [0, 1, 2, 1 << 127, (1 << 128) - 1, 0x87]
    pairs = [(a, b) for a in edge for b in edge]
    pairs += [(rng.getrandbits(128), rng.getrandbits(128)) for _ in range(2000)]
    pairs += [(rng.getrandbits(128), 1 << rng.randrange(128)) for _ in range(200)]
    for a, b in pairs:
        assert gf128_mul(a, b) == ref_mul(a, b)
    assert gf128_mul(1 << 127, 2) == 0x87                      # x^128 = x^7 + x^2 + x + 1
    with pytest.raises(ValueError):
        gf128_mul(1 << 128, 1)


def test_gf128_is_a_field():
    rng = random.Random(12)
    for _ in range(4):
        a, b, c = (rng.getrandbits(128) for _ in range(3))
        assert gf128_mul(a, b) == gf128_mul(b, a)
        assert gf128_mul(a, b ^ c) == gf128_mul(a, b) ^ gf128_mul(a, c)
        assert gf128_mul(gf128_mul(a, b), c) == gf128_mul(a, gf128_mul(b, c))
        assert ref_mul(a, ref_pow(a, (1 << 128) - 2)) == 1     # every nonzero element is invertible


def test_field_agrees_with_gcm_ghash_known_answer():
    """GCM spec (McGrew-Viega 2004) test case 2: GHASH(H, {}, C) with one ciphertext block. GCM
    reflects the bit order; reflected, its multiplication is ours."""
    H = reflect(0x66E94BD4EF8A2C3B884CFA59CA342B2E)
    C = reflect(0x0388DACE60B6A392F328C2B971B2FE78)
    lengths = reflect(128)                                      # len(A) = 0, len(C) = 128 bits
    ghash = gf128_mul(gf128_mul(C, H) ^ lengths, H)
    assert reflect(ghash) == 0xF38CBB1AD69223DCC3457AE5B6B0F885


def test_shoup_tables_multiply_by_their_constant():
    rng = random.Random(13)
    for _ in range(5):
        c = rng.getrandbits(128)
        table = auth._mul_table(c)
        for _ in range(200):
            a = rng.getrandbits(128)
            assert auth._tmul(table, a) == ref_mul(c, a)


def test_poly_hash_is_the_documented_polynomial():
    rng = random.Random(14)
    for n in (0, 1, 15, 16, 17, 31, 33, 100):
        key = rng.getrandbits(128)
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert poly_hash(key, data) == ref_hash(key, data)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 511, 512, 513, 16 * 32 * 3 - 1, 16 * 32 * 3, 16 * 32 * 3 + 5, 40_000])
def test_vectorised_and_horner_paths_agree(n):
    rng = np.random.default_rng(n)
    key = int.from_bytes(rng.bytes(16), "big")
    data = rng.bytes(n)
    horner = auth._PolyHash(key, engine="horner")
    vector = auth._PolyHash(key, vector_min_blocks=0, engine="tables")
    h = horner.digest([data])
    assert vector.digest([data]) == h
    assert vector.digest([data[:7], data[7:]]) == h             # header and payload hashed in place
    if n <= 1024:
        assert h == ref_hash(key, data)


def test_hash_distinguishes_zero_padding_and_length():
    """The length block keeps m, m||0 and 0||m apart (prefix-free encoding)."""
    key = random.Random(15).getrandbits(128)
    m = b"\x01" * 16
    digests = {poly_hash(key, x) for x in (m, m + b"\0", b"\0" * 16 + m, m[:15], b"")}
    assert len(digests) == 5


def ref_horner(key, data):
    """Horner's rule block by block with the bitwise reference multiply (fast enough for KiB)."""
    padded = data + b"\0" * (-len(data) % 16)
    acc = 0
    for i in range(0, len(padded), 16):
        acc = ref_mul(acc ^ int.from_bytes(padded[i:i + 16], "big"), key)
    return ref_mul(acc ^ (8 * len(data)), key)


def _native_variants():
    """The default build (PCLMULQDQ where the CPU has it) and the portable C build."""
    from qkdlink.host.native import DEFAULT_FLAGS
    libs = {"default": auth._native_lib(),
            "portable": auth._native_lib(tuple(f for f in DEFAULT_FLAGS if not f.startswith("-march")))}
    # g++ is part of the fresh-machine contract: the kernel must build, not be skipped
    assert libs["default"] is not None and libs["portable"] is not None
    assert libs["portable"].ph_clmul() == 0
    return libs


def _native_hasher(lib, key):
    h = auth._PolyHash(key, engine="horner")          # then switched to the given kernel build
    h._lib, h._ktab = lib, np.zeros(auth._NATIVE_TABLE_WORDS, dtype=np.uint64)
    h._ktab_ptr = h._ktab.ctypes.data
    lib.ph_init(key & (2**64 - 1), key >> 64, h._ktab_ptr)
    return h


@pytest.mark.parametrize("variant", ["default", "portable"])
def test_native_kernel_is_bit_exact_with_the_reference(variant):
    lib = _native_variants()[variant]
    rng = random.Random(21)
    keys = [0, 1, 2, 1 << 127, (1 << 128) - 1, 0x87] + [rng.getrandbits(128) for _ in range(4)]
    lengths = [0, 1, 15, 16, 17, 31, 32, 33, 127, 128, 129, 143, 144, 145, 255, 256, 257, 1000]
    for key in keys:
        h = _native_hasher(lib, key)
        for n in lengths + [rng.randrange(2, 700) for _ in range(3)]:
            data = bytes(rng.getrandbits(8) for _ in range(n))
            want = ref_horner(key, data)
            if n <= 33:
                assert want == ref_hash(key, data)
            assert h.digest([data]) == want, (variant, hex(key), n)
            cut = rng.randrange(n + 1)                   # parts of any type and length, hashed in place
            assert h.digest([data[:cut], bytearray(data[cut:])]) == want
            assert h.digest([memoryview(data)[:cut], b"", data[cut:cut + 5], memoryview(bytearray(data[cut + 5:]))]) \
                == want


def test_native_kernel_agrees_with_the_tables_on_large_inputs():
    libs = _native_variants()
    rng = np.random.default_rng(22)
    for n in (4096 * 16 + 3, (1 << 20) + 9):
        key = int.from_bytes(rng.bytes(16), "big")
        data = rng.bytes(n)
        want = auth._PolyHash(key, vector_min_blocks=0, engine="tables").digest([data])
        assert _native_hasher(libs["default"], key).digest([data]) == want
        assert _native_hasher(libs["default"], key).digest([data[:44], data[44:]]) == want
        if n < 100_000:                                  # the portable multiply is slow
            assert _native_hasher(libs["portable"], key).digest([data]) == want


def test_hash_engine_selection_and_fallback(monkeypatch):
    key = random.Random(23).getrandbits(128)
    data = bytes(range(256)) * 5
    with pytest.raises(ValueError, match="engine"):
        auth._PolyHash(key, engine="fast")
    with pytest.raises(ValueError, match="hash key"):
        auth._PolyHash(1 << 128)
    want = ref_horner(key, data)
    for engine in ("horner", "tables"):
        assert auth._PolyHash(key, vector_min_blocks=0, engine=engine).digest([data]) == want
    monkeypatch.setenv("QKDLINK_AUTH_NATIVE", "0")     # kernel switched off: "auto" uses the tables
    monkeypatch.setattr(auth, "_native_state", {})
    assert not auth.native_hash_available()
    h = auth._PolyHash(key)
    assert h.engine == "tables" and h.digest([data]) == want
    with pytest.raises(RuntimeError, match="QKDLINK_AUTH_NATIVE"):
        auth._PolyHash(key, engine="native")


def test_ends_with_different_hash_engines_interoperate(monkeypatch):
    """Alice's pool hashes with the kernel, Bob's with the numpy tables: every frame verifies."""
    _native_variants()
    key = preshared(1 << 14, seed=24)
    pa = KeyPool(key)
    monkeypatch.setattr(auth, "_native_state", {"default": None})
    pb = KeyPool(key)
    assert pa._streams[ALICE_TO_BOB].hasher.engine == "native"
    assert pb._streams[ALICE_TO_BOB].hasher.engine == "tables"
    a, b = session(pa, pb)
    rng = np.random.default_rng(24)
    for n in (0, 5, 16, 300, 70_000):
        payload = rng.bytes(n)
        assert b.open(a.seal(payload)) == payload
        assert a.open(b.seal(payload)) == payload
    frame = bytearray(a.seal(b"x" * 100))
    frame[50] ^= 1
    assert rejected(b, bytes(frame)) == Reject.BAD_TAG


# -- parameters ------------------------------------------------------------------------------------

def test_epsilon_and_tag_length():
    assert hash_blocks(0) == 1 and hash_blocks(1) == 2 and hash_blocks(16) == 2 and hash_blocks(17) == 3
    assert epsilon_per_message(0, 64) == math.ldexp(4, -64)             # 44-byte header: 3 blocks + length
    assert epsilon_per_message(20, 32) == math.ldexp(hash_blocks(64), -32) == math.ldexp(5, -32)
    assert DEFAULT_TAG_BITS == 88 == tag_bits_for(2.0 ** -64, 16 << 20)
    assert epsilon_per_message(16 << 20, 88) <= 2.0 ** -64 < epsilon_per_message(16 << 20, 80)
    assert tag_bits_for(2.0 ** -64, 1000) == 72
    assert tag_bits_for(1e-9, 1 << 20) == 48                          # 29.9 + 16.0 bits
    with pytest.raises(ValueError, match="target_epsilon"):
        tag_bits_for(2.0 ** -120, 16 << 20)
    for bad in (0, 7, 12, 136, True, 64.0):
        with pytest.raises(ValueError, match="tag_bits"):
            epsilon_per_message(10, bad)


def test_authenticator_validates_its_parameters():
    pa, _ = pools()
    with pytest.raises(ValueError, match="role"):
        Authenticator("eve", pa, SID)
    with pytest.raises(ValueError, match="session_id"):
        Authenticator("alice", pa, b"short")
    with pytest.raises(ValueError, match=r"tag_bits = 64: gives epsilon = 2\^-44"):
        Authenticator("alice", pa, SID, tag_bits=64)
    with pytest.raises(ValueError, match="target_epsilon"):
        Authenticator("alice", pa, SID, tag_bits=64, target_epsilon=0)
    assert pa.slot_bits(ALICE_TO_BOB) is None                          # failed constructors leave no layout
    a = Authenticator("alice", pa, SID, tag_bits=64, max_payload_bytes=1000, target_epsilon=2.0 ** -50)
    assert a.epsilon_per_message == epsilon_per_message(1000, 64) < 2.0 ** -57
    assert repr(a).startswith("Authenticator(role='alice'")
    a.close()
    assert Authenticator("alice", pools()[0], SID, max_payload_bytes=1000).tag_bits == 72   # for 2^-64
    assert Authenticator.__init__.__kwdefaults__["target_epsilon"] == 2.0 ** -64


# -- round trips -----------------------------------------------------------------------------------

def test_round_trips_in_both_directions():
    pa, pb = pools(1 << 18)
    a, b = session(pa, pb)
    rng = np.random.default_rng(3)
    sent = 0
    for i in range(60):
        n = int(rng.choice([0, 1, 15, 16, 17, 200, 5000, 20_000]))
        payload = rng.bytes(n)
        if rng.random() < 0.5:
            assert b.open(a.seal(payload)) == payload
        else:
            assert a.open(b.seal(payload)) == payload
        sent += 1
    big = rng.bytes(300_000)                                   # vectorised hash path
    assert a.open(b.seal(big)) == big and b.open(a.seal(big)) == big
    la, lb = a.ledger(), b.ledger()
    assert la["messages"] == lb["messages"] == sent + 2
    assert la["send"]["messages"] == lb["receive"]["messages"]
    assert la["receive"]["messages"] == lb["send"]["messages"]
    assert la["state"] == lb["state"] == "open" and la["abort_reason"] is None
    a.close(), b.close()
    assert a.state == b.state == "closed"
    with pytest.raises(SessionClosed):
        a.seal(b"x")


def test_frames_are_laid_out_as_documented():
    pa, pb = pools()
    a, b = session(pa, pb)
    frame = a.seal(b"abc")
    assert len(frame) == HEADER_BYTES + 3 + TB
    assert frame[:5] == b"QA\x01\x00" + bytes([TB]) and frame[5:8] == b"\0\0\0" and frame[8:24] == SID
    assert int.from_bytes(frame[24:32], "big") == 0                    # one-time-pad slot
    assert int.from_bytes(frame[32:40], "big") == 0                    # sequence number
    assert int.from_bytes(frame[40:44], "big") == 3
    assert frame[44:47] == b"abc"
    second = a.seal(b"")
    assert int.from_bytes(second[24:32], "big") == 1 and int.from_bytes(second[32:40], "big") == 1
    assert b.open(frame) == b"abc" and b.open(second) == b""
    back = b.seal(b"z")
    assert back[3] == 1                                                # bob->alice


# -- tampering -------------------------------------------------------------------------------------

FIELD_REASONS = [  # (first byte, end byte, reasons a single bit flip there may produce)
    (0, 5, {Reject.MALFORMED, Reject.WRONG_DIRECTION}),
    (5, 8, {Reject.MALFORMED}),
    (8, 24, {Reject.WRONG_SESSION}),
    (24, 32, {Reject.KEY_DESYNC, Reject.BAD_TAG}),                     # slot: behind, too far, or other pad
    (32, 40, {Reject.REPLAY, Reject.OUT_OF_ORDER}),
    (40, 44, {Reject.TRUNCATED, Reject.MALFORMED, Reject.TOO_LONG}),
]


def expected_reasons(byte):
    for lo, hi, reasons in FIELD_REASONS:
        if lo <= byte < hi:
            return reasons
    return {Reject.BAD_TAG}                                            # payload and tag


@pytest.mark.parametrize("case", ["first-frame", "third-frame", "bob-empty", "long-frame"])
def test_every_single_bit_flip_is_rejected(case):
    rng = np.random.default_rng({"first-frame": 1, "third-frame": 2, "bob-empty": 3, "long-frame": 4}[case])
    pa, pb = pools(1 << 20, seed=5)
    kw = dict(max_skip_bits=8 * T, max_payload_bytes=1 << 16, tag_bits=T)
    n_payload, index, sender = {"first-frame": (64, 0, "alice"), "third-frame": (37, 2, "alice"),
                                "bob-empty": (0, 0, "bob"), "long-frame": (12_000, 1, "alice")}[case]
    payloads = [rng.bytes(n_payload) for _ in range(index + 1)]
    n_bits = 8 * (HEADER_BYTES + n_payload + TB)
    flips = range(n_bits) if case != "long-frame" else rng.choice(n_bits, 700, replace=False)
    reasons = collections.Counter()
    for bit in flips:
        resync(pa, pb)
        a, b = session(pa, pb, **kw)
        tx, rx = (a, b) if sender == "alice" else (b, a)
        frames = [tx.seal(p) for p in payloads]
        for f, p in zip(frames[:-1], payloads):
            assert rx.open(f) == p
        bad = bytearray(frames[-1])
        bad[bit // 8] ^= 0x80 >> (bit % 8)
        reason = rejected(rx, bytes(bad))
        assert reason in expected_reasons(bit // 8), (bit, reason)
        reasons[reason] += 1
        with pytest.raises(SessionAborted) as later:                   # the genuine frame no longer helps
            rx.open(frames[-1])
        assert later.value.cause == reason
        with pytest.raises(SessionAborted):
            rx.seal(b"anything")
        tx.close()
    assert sum(reasons.values()) == len(flips)
    assert reasons[Reject.BAD_TAG] >= 8 * (n_payload + TB) * len(flips) // n_bits


def test_every_truncation_and_extension_is_rejected():
    pa, pb = pools(1 << 18)
    frame_len = None
    for cut in range(HEADER_BYTES + 40 + TB + 1):
        resync(pa, pb)
        a, b = session(pa, pb)
        frame = a.seal(bytes(range(40)))
        frame_len = len(frame)
        if cut < frame_len:
            assert rejected(b, frame[:cut]) == Reject.TRUNCATED
        else:
            assert rejected(b, frame + b"\0") == Reject.MALFORMED
        a.close()
    assert frame_len == HEADER_BYTES + 40 + TB


def test_replay_aborts_the_session():
    pa, pb = pools()
    a, b = session(pa, pb)
    f0, f1 = a.seal(b"zero"), a.seal(b"one")
    assert b.open(f0) == b"zero"
    assert rejected(b, f0) == Reject.REPLAY
    with pytest.raises(SessionAborted) as e:
        b.open(f1)
    assert e.value.reason == Reject.ABORTED and e.value.cause == Reject.REPLAY
    with pytest.raises(SessionAborted):
        b.seal(b"reply")
    assert b.ledger()["abort_reason"] == "replay" and b.ledger()["state"] == "aborted"


@pytest.mark.parametrize("order", [(1,), (0, 2), (0, 1, 3)])
def test_reordered_or_missing_frames_abort_the_session(order):
    pa, pb = pools()
    a, b = session(pa, pb)
    frames = [a.seal(b"%d" % i) for i in range(4)]
    for i in order[:-1]:
        assert b.open(frames[i]) == b"%d" % i
    assert rejected(b, frames[order[-1]]) == Reject.OUT_OF_ORDER


def test_wrong_session_and_reflected_frames_are_rejected():
    pa, pb = pools()
    a = Authenticator("alice", pa, SID)
    b = Authenticator("bob", pb, bytes(16))
    assert rejected(b, a.seal(b"hi")) == Reject.WRONG_SESSION
    frame = a.seal(b"to bob")
    assert rejected(a, frame) == Reject.WRONG_DIRECTION                # Alice's own frame sent back


def test_frames_of_an_earlier_session_are_rejected():
    pa, pb = pools()
    a, b = session(pa, pb)
    old = [a.seal(b"old %d" % i) for i in range(2)]
    for f in old:
        b.open(f)
    a.close(), b.close()
    a, b = session(pa, pb)                                             # same session id, on purpose
    assert rejected(b, old[0]) == Reject.KEY_DESYNC                    # its pad is already used
    a.close()
    a, b = session(pa, pb, sid=b"\x01" * 16)
    assert rejected(b, old[1]) == Reject.WRONG_SESSION


def test_forged_tags_are_accepted_at_the_rate_the_bound_allows():
    """8-bit tags (for the statistics only): a random tag passes with probability 2^-8, a payload
    substitution under the genuine tag with at most L/2^8 (L = 6 blocks here)."""
    pa, pb = pools(1 << 17, seed=9)
    rng = np.random.default_rng(9)
    kw = dict(tag_bits=8, target_epsilon=1.0, max_payload_bytes=32)
    eps = epsilon_per_message(32, 8)
    assert eps == 6 / 256
    trials, accepted_tags, accepted_subs = 1500, 0, 0
    for i in range(trials):
        for kind in ("tag", "payload"):
            resync(pa, pb)
            a, b = session(pa, pb, **kw)
            frame = bytearray(a.seal(rng.bytes(32)))
            if kind == "tag":
                frame[-1] = int(rng.integers(256))
            else:
                frame[HEADER_BYTES:HEADER_BYTES + 32] = rng.bytes(32)
            try:
                b.open(bytes(frame))
                if kind == "tag":
                    accepted_tags += 1
                else:
                    accepted_subs += 1
            except AuthenticationError as e:
                assert e.reason == Reject.BAD_TAG
            a.close(), b.close()
    assert 0 < accepted_tags < 3 * trials / 256                      # ~5.9 expected
    assert accepted_subs < trials * eps                                # bound 35, ~5.9 expected


# -- the key pool ----------------------------------------------------------------------------------

def test_pool_splits_and_hands_out_each_bit_once_in_order():
    key = preshared(32 + 100)
    bits = np.unpackbits(np.frombuffer(key, np.uint8))[256:]
    pool = KeyPool(key, audit=True)
    assert pool.available(ALICE_TO_BOB) == pool.available(BOB_TO_ALICE) == 400
    got = [pool.take(n, stream=ALICE_TO_BOB) for n in (8, 13, 3, 376)]
    assert b"".join(got[:1]) == np.packbits(bits[:8]).tobytes()
    assert got[1] == np.packbits(bits[8:21]).tobytes() and len(got[1]) == 2   # last byte zero-padded
    assert got[3] == np.packbits(bits[24:400]).tobytes()
    assert pool.take(400, stream=BOB_TO_ALICE) == np.packbits(bits[400:]).tobytes()
    extra = np.random.default_rng(2).integers(0, 2, 101).astype(np.uint8)
    pool.replenish(extra)
    assert pool.available(ALICE_TO_BOB) == 51 and pool.available(BOB_TO_ALICE) == 50
    pool.replenish(b"\xff", stream=BOB_TO_ALICE)
    assert pool.take(58, stream=BOB_TO_ALICE) == np.packbits(np.r_[extra[51:], np.ones(8, np.uint8)]).tobytes()
    assert pool.position(BOB_TO_ALICE) == 458
    with pytest.raises(ValueError, match="stream"):
        pool.take(1, stream="eve->bob")
    with pytest.raises(ValueError, match="only 0 and 1"):
        pool.replenish(np.array([0, 2]))
    with pytest.raises(ValueError, match="at least 256"):
        KeyPool(b"\0" * 31)


def test_key_exhausted_consumes_nothing_and_the_session_goes_on():
    key = preshared(32 + 2 * TB)                                       # one pad per direction
    pa, pb = KeyPool(key), KeyPool(key)
    a, b = session(pa, pb)
    f0 = a.seal(b"first")
    before = pa.stats()
    with pytest.raises(KeyExhausted, match="nothing was consumed"):
        a.seal(b"second")
    assert pa.stats() == before and a.state == "open"
    more = preshared(2 * TB, seed=7)
    pa.replenish(more)
    f1 = a.seal(b"second")
    assert b.open(f0) == b"first"
    with pytest.raises(KeyExhausted):                                  # Bob has not replenished yet
        b.open(f1)
    assert b.state == "open" and pb.stats()[ALICE_TO_BOB]["position"] == T
    pb.replenish(more)
    assert b.open(f1) == b"second"
    a.close(), b.close()
    assert pb.available(ALICE_TO_BOB) == 0
    with pytest.raises(KeyExhausted):
        pb.take(1, stream=ALICE_TO_BOB)
    assert len(pb.take(2 * T, stream=BOB_TO_ALICE)) == 2 * TB and pb.available(BOB_TO_ALICE) == 0


def test_take_is_refused_while_a_session_uses_the_stream():
    pa, pb = pools()
    a = Authenticator("alice", pa, SID)
    with pytest.raises(RuntimeError, match="in use"):
        pa.take(8, stream=ALICE_TO_BOB)
    with pytest.raises(RuntimeError, match="in use"):
        Authenticator("bob", pa, SID)                                  # one pool per endpoint
    with pytest.raises(RuntimeError, match="in use"):
        pa.discard_to(BOB_TO_ALICE, 1000)
    a.close()
    with pytest.raises(ValueError, match="tag_bits = 64"):
        Authenticator("alice", pa, SID, tag_bits=64, max_payload_bytes=100)   # stream laid out in 88-bit slots
    fresh = KeyPool(preshared(1024))
    fresh.take(8, stream=ALICE_TO_BOB)
    Authenticator("alice", fresh, SID).close()
    assert fresh.slot_bits(ALICE_TO_BOB) == fresh.slot_bits(BOB_TO_ALICE) == T
    assert pa.take(8, stream=ALICE_TO_BOB)
    a = Authenticator("alice", pa, SID)
    del a                                                              # a forgotten session frees its lease
    import gc
    gc.collect()
    Authenticator("alice", pa, SID).close()


def test_no_key_bit_is_used_twice_or_in_two_roles():
    """A long conversation over several sessions, with aborts, resynchronisation, replenishing
    and receivers that fall behind. Afterwards, from the audit trail of positions: in each pool
    no bit was handed out twice, and a bit used at both ends was used for the same slot."""
    pa, pb = pools(4096, seed=21)
    rng = np.random.default_rng(21)
    for s in range(40):
        if s % 5 == 0:
            more = rng.bytes(2048)
            pa.replenish(more), pb.replenish(more)
        if rng.random() < 0.5:
            resync(pa, pb)
        sid = rng.bytes(16)
        a, b = session(pa, pb, sid=sid)
        for _ in range(int(rng.integers(1, 8))):
            tx, rx = (a, b) if rng.random() < 0.6 else (b, a)
            frame = tx.seal(rng.bytes(int(rng.integers(0, 300))))
            fate = rng.random()
            if fate < 0.08:                                            # lost: the receiver falls behind
                continue
            if fate < 0.16:
                frame = frame[:-1] + bytes([frame[-1] ^ 1])
            try:
                rx.open(frame)
            except AuthenticationError:
                break
        a.close(), b.close()

    def uses(pool):
        owner = {}
        for d in pool.draws():
            for lo, hi in d.global_ranges:
                for g in range(lo, hi):
                    assert g not in owner, f"bit {g} handed out twice"
                    owner[g] = (d.stream, d.offset, d.purpose)
        return owner

    ua, ub = uses(pa), uses(pb)
    shared = [g for g in ua.keys() & ub.keys() if "discard" not in (ua[g][2], ub[g][2])]
    assert shared
    for g in shared:
        assert ua[g] == ub[g], (g, ua[g], ub[g])
    discarded = sum(st["discarded_bits"] for st in pa.stats().values())
    assert discarded > 0                                               # resynchronisation happened


def test_receiver_behind_skips_forward_within_max_skip():
    pa, pb = pools()
    a, b = session(pa, pb)
    frames = [a.seal(b"%d" % i) for i in range(3)]
    b.open(frames[0])
    assert rejected(b, frames[1][:10]) == Reject.TRUNCATED             # Bob used one pad, Alice three
    a.close()
    a, b = session(pa, pb, sid=b"\x02" * 16)
    assert b.open(a.seal(b"next")) == b"next"
    assert b.ledger()["receive"]["first_slot"] == 3 and b.ledger()["receive"]["discarded_bits"] == 2 * T
    a.close(), b.close()
    a, b = session(pa, pb, sid=b"\x03" * 16, max_skip_bits=T)
    forged = bytearray(a.seal(b"x"))
    forged[24:32] = (10).to_bytes(8, "big")                            # claims slot 10, 6 slots ahead
    assert rejected(b, bytes(forged)) == Reject.KEY_DESYNC
    assert pb.position(ALICE_TO_BOB) == 4 * T                          # nothing was burnt
    a.close()
    a, b = session(pa, pb, sid=b"\x04" * 16, max_skip_bits=2 * T)    # Bob is at slot 4 (4 not taken)
    forged = bytearray(a.seal(b"y"))                                    # Alice's slot 5
    forged[24:32] = (6).to_bytes(8, "big")                             # skip of 2 slots: within max_skip
    assert rejected(b, bytes(forged)) == Reject.BAD_TAG                # Bob skipped and used slot 6's pad
    assert pb.position(ALICE_TO_BOB) == 7 * T and b.ledger()["receive"]["discarded_bits"] == 2 * T
    a.close()
    assert pa.position(ALICE_TO_BOB) == 6 * T                          # Alice is now behind Bob:
    a, b = session(pa, pb, sid=b"\x05" * 16)
    assert rejected(b, a.seal(b"z")) == Reject.KEY_DESYNC              # her slot 6 is spent at Bob's end
    a.close()
    resync(pa, pb)                                                     # both at slot 7 now
    a, b = session(pa, pb, sid=b"\x06" * 16)
    assert b.open(a.seal(b"back in sync")) == b"back in sync"
    assert b.ledger()["receive"]["first_slot"] == 7


# -- nothing leaks -----------------------------------------------------------------------------------

def test_key_material_never_appears_in_repr_logs_or_errors(caplog):
    key = preshared(4096, seed=33)
    pa, pb = KeyPool(key), KeyPool(key)
    caplog.set_level(logging.DEBUG, logger="qkdlink")
    texts = []
    a, b = session(pa, pb)
    for i in range(5):
        b.open(a.seal(b"m%d" % i))
        a.open(b.seal(b"r%d" % i))
    frame = bytearray(a.seal(b"tampered"))
    frame[-1] ^= 1
    with pytest.raises(AuthenticationError) as e:
        b.open(bytes(frame))
    texts += [str(e.value), repr(e.value)]
    with pytest.raises(SessionAborted) as e2:
        b.seal(b"")
    texts += [str(e2.value), repr(pa), repr(pb), repr(a), repr(b), str(a.ledger()), str(b.ledger()),
              str(pa.stats()), caplog.text]
    a.close()
    assert "frame rejected" in caplog.text and "bad-tag" in caplog.text
    blob = "\n".join(texts).lower()
    hexkey = key.hex()
    windows = {hexkey[i:i + 12] for i in range(0, len(hexkey) - 12, 2)}   # every 6-byte window of the key
    assert not any(w in blob for w in windows)
    for d in pa.stats().values():
        assert set(d) >= {"received_bits", "consumed_bits", "discarded_bits", "available_bits"}
    with pytest.raises(TypeError):
        copy.copy(pa)
    with pytest.raises(TypeError):
        copy.deepcopy(pa)
    with pytest.raises(TypeError):
        pickle.dumps(pa)
    with pytest.raises(TypeError):
        pickle.dumps(a)


def test_closed_pool_is_wiped():
    pa, _ = pools()
    pa.close()
    with pytest.raises(RuntimeError, match="closed"):
        pa.take(1, stream=ALICE_TO_BOB)
    with pytest.raises(RuntimeError, match="closed"):
        Authenticator("alice", pa, SID)


# -- accounting ------------------------------------------------------------------------------------------

def test_ledger_accounts_every_bit_and_the_forgery_bound():
    pa, pb = pools()
    kw = dict(max_payload_bytes=4096, tag_bits=T)
    a, b = session(pa, pb, **kw)
    eps = epsilon_per_message(4096, T)
    assert a.epsilon_per_message == eps
    sizes_ab, sizes_ba = [0, 10, 4096, 77], [5, 1000]
    for n in sizes_ab:
        b.open(a.seal(bytes(n)))
    for n in sizes_ba:
        a.open(b.seal(bytes(n)))
    la, lb = a.ledger(), b.ledger()
    for mine, theirs in ((la["send"], lb["receive"]), (la["receive"], lb["send"])):
        for k in ("stream", "first_slot", "messages", "payload_bytes", "otp_bits", "tags", "forgery_probability"):
            assert mine[k] == theirs[k], k
    assert la["send"]["messages"] == 4 and la["send"]["payload_bytes"] == sum(sizes_ab)
    assert la["send"]["otp_bits"] == la["send"]["key_bits_consumed"] == 4 * T
    assert la["key_bits_consumed"] == 6 * T
    assert la["forgery_probability"] == pytest.approx(6 * eps, rel=1e-12)
    assert la["hash_key_bits"] == 0                                    # recycled: see KeyPool.stats
    frame = bytearray(a.seal(b"x"))
    frame[50] ^= 4
    assert rejected(b, bytes(frame)) == Reject.BAD_TAG
    lb = b.ledger()
    assert lb["receive"]["tags"] == 5 and lb["receive"]["messages"] == 4 and lb["receive"]["rejected"] == 1
    assert lb["forgery_probability"] == pytest.approx(7 * eps, rel=1e-12)   # the failed check counts
    assert lb["state"] == "aborted" and lb["abort_reason"] == "bad-tag"
    st = pb.stats()[ALICE_TO_BOB]
    assert st["tags"] == 5 and st["forgery_probability"] == pytest.approx(5 * eps)
    assert st["consumed_bits"] == 5 * T and st["hash_key_bits"] == 128
    for s in pb.stats().values():
        assert s["received_bits"] == s["consumed_bits"] + s["discarded_bits"] + s["available_bits"]
