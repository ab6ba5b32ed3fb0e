"""Information-theoretically secure authentication of the classical channel (Wegman-Carter).

A tag is ``trunc_t(h_k(m)) XOR r``: ``h_k`` is polynomial evaluation over GF(2^128) keyed by a
secret field element ``k`` (an epsilon-almost-XOR-universal family), ``r`` is ``t`` fresh key
bits (a one-time pad) used for this message and never again. The hash key is recycled across
messages and sessions, which Wegman and Carter proposed and Portmann proved composably secure
with an error that adds up linearly over the messages; the one-time pads are never reused.
``docs/authentication.md`` has the construction, the security argument and the parameters.

Sources
    M. N. Wegman, J. L. Carter, "New hash functions and their use in authentication and set
    equality", J. Comput. Syst. Sci. 22, 265-279 (1981) -- universal hash + one-time pad tags.
    C. Portmann, "Key recycling in authentication", IEEE Trans. Inf. Theory 60, 4383-4396
    (2014), arXiv:1202.1229 -- the hash key may be recycled; error linear in the messages.
    J. Bierbrauer, T. Johansson, G. Kabatianskii, B. Smeets, "On families of hash functions via
    geometric codes and concatenation", CRYPTO '93, LNCS 773, 331-342 -- polynomial evaluation:
    two distinct messages of at most L field elements collide with probability <= L/|F|.
    D. McGrew, J. Viega, "The Galois/Counter Mode of operation (GCM)" (2004); NIST SP 800-38D --
    the field GF(2^128) mod x^128 + x^7 + x^2 + x + 1 and the length block (GHASH).
    V. Shoup, "On fast and provably secure message authentication based on universal hashing",
    CRYPTO '96 -- table-driven multiplication by a fixed field element.
    S. Gueron, M. E. Kounavis, "Intel Carry-Less Multiplication Instruction and its Usage for
    Computing the GCM Mode", Intel white paper 323640 (2014) -- PCLMULQDQ and aggregated
    reduction, used by the native kernel ``host/native/polyhash.cpp``.

Three pieces, all in this module:

* :class:`KeyPool` -- one endpoint's copy of the authentication key: two direction streams
  (``alice->bob`` and ``bob->alice``), each with its own hash key and one-time-pad bits. Bits are
  handed out exactly once, all or nothing (:class:`KeyExhausted`), and never shown.
* :class:`Authenticator` -- a session: :meth:`~Authenticator.seal` frames and tags a payload,
  :meth:`~Authenticator.open` checks a frame and returns its payload or raises
  :class:`AuthenticationError` with the reason; after any rejection the session is aborted.
* pure functions for the field, the hash and the security parameters: :func:`gf128_mul`,
  :func:`poly_hash`, :func:`epsilon_per_message`, :func:`tag_bits_for`.
"""
from __future__ import annotations

import ctypes
import enum
import hmac
import logging
import math
import os
import struct
import threading
import warnings
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Iterable, NamedTuple

import numpy as np

__all__ = [
    "ALICE_TO_BOB", "BOB_TO_ALICE", "STREAMS", "ROLES", "HEADER_BYTES", "HASH_KEY_BITS",
    "DEFAULT_TARGET_EPSILON", "DEFAULT_MAX_PAYLOAD_BYTES", "DEFAULT_TAG_BITS",
    "KeyExhausted", "AuthenticationError", "SessionAborted", "SessionClosed", "Reject",
    "KeyPool", "Draw", "Authenticator",
    "gf128_mul", "poly_hash", "hash_blocks", "epsilon_per_message", "tag_bits_for",
    "HASH_ENGINES", "native_hash_available",
]

log = logging.getLogger(__name__)

ALICE_TO_BOB = "alice->bob"
BOB_TO_ALICE = "bob->alice"
STREAMS = (ALICE_TO_BOB, BOB_TO_ALICE)
ROLES = ("alice", "bob")
_SEND_STREAM = {"alice": ALICE_TO_BOB, "bob": BOB_TO_ALICE}
_RECV_STREAM = {"alice": BOB_TO_ALICE, "bob": ALICE_TO_BOB}
_DIRECTION_CODE = {ALICE_TO_BOB: 0, BOB_TO_ALICE: 1}

HASH_KEY_BITS = 128
DEFAULT_TARGET_EPSILON = 2.0 ** -64
DEFAULT_MAX_PAYLOAD_BYTES = 16 << 20
DEFAULT_MAX_SKIP_BITS = 1 << 20

# ----------------------------------------------------------------------------------------------
# GF(2^128), polynomial basis: bit i of a Python int is the coefficient of x^i, modulus
# x^128 + x^7 + x^2 + x + 1 (the GCM field, without GCM's reflected bit order).

_MASK64 = (1 << 64) - 1
_MASK128 = (1 << 128) - 1
_MODULUS = (1 << 128) | 0x87


def _xtime(v: int) -> int:
    """v * x mod the field polynomial."""
    v <<= 1
    return v ^ _MODULUS if v >> 128 else v


def gf128_mul(a: int, b: int) -> int:
    """Product of two elements of GF(2^128) (ints in [0, 2^128)), reduced mod x^128+x^7+x^2+x+1.

    Carry-less schoolbook multiplication followed by reduction with x^128 = x^7 + x^2 + x + 1.
    Used to set up keys; bulk hashing goes through the tables of :class:`_PolyHash`.
    """
    if not (0 <= a <= _MASK128 and 0 <= b <= _MASK128):
        raise ValueError("gf128_mul: operands must be ints in [0, 2^128)")
    p = 0
    while b:
        low = b & -b
        p ^= a << (low.bit_length() - 1)
        b ^= low
    while p >> 128:
        hi = p >> 128
        p = (p & _MASK128) ^ hi ^ (hi << 1) ^ (hi << 2) ^ (hi << 7)
    return p


def _mul_table(c: int) -> tuple[list[int], ...]:
    """Shoup's 8-bit tables for multiplication by the constant c: row j, entry v = c * v x^(8j)."""
    rows = []
    v = c
    for _ in range(16):
        row = [0]
        for _bit in range(8):
            row += [e ^ v for e in row]
            v = _xtime(v)
        rows.append(row)
    return tuple(rows)


def _tmul(table: tuple[list[int], ...], a: int) -> int:
    """c * a with c's table (16 lookups, one per byte of a)."""
    r = 0
    for row, byte in zip(table, a.to_bytes(16, "little")):
        r ^= row[byte]
    return r


# -- native kernel (host/native/polyhash.cpp) -----------------------------------------------------

HASH_ENGINES = ("auto", "native", "tables", "horner")
_NATIVE_ENV = "QKDLINK_AUTH_NATIVE"   # "0": never load the C++ kernel ("auto" = "tables")
_native_state: dict = {}
_native_lock = threading.Lock()


def _native_lib(flags: tuple[str, ...] | None = None):
    """The compiled ``polyhash.cpp`` with its signatures, or None (warned once) if it cannot build.

    ``flags`` (tests only) compiles another variant, e.g. without ``-march=native`` to get the
    portable carry-less multiply; the default build is cached for the process.
    """
    key = flags or "default"
    with _native_lock:
        if key in _native_state:
            return _native_state[key]
        lib = None
        if flags is not None or os.environ.get(_NATIVE_ENV, "1") != "0":
            from .native import DEFAULT_FLAGS, NativeBuildError, load
            try:
                lib = load("polyhash", flags if flags is not None else DEFAULT_FLAGS)
            except NativeBuildError as e:
                warnings.warn(f"authentication hashing falls back to the numpy tables: {e}", RuntimeWarning)
            if lib is not None:
                vp, u64 = ctypes.c_void_p, ctypes.c_uint64
                lib.ph_clmul.argtypes, lib.ph_clmul.restype = [], ctypes.c_int
                lib.ph_table_words.argtypes, lib.ph_table_words.restype = [], ctypes.c_int
                lib.ph_init.argtypes, lib.ph_init.restype = [u64, u64, vp], None
                lib.ph_digest.argtypes, lib.ph_digest.restype = [vp, ctypes.c_int, vp, vp, vp], None
                lib.ph_digest2.argtypes, lib.ph_digest2.restype = [vp, vp, u64, vp, u64, vp], None
                if lib.ph_table_words() != _NATIVE_TABLE_WORDS:
                    warnings.warn("authentication hashing: polyhash.cpp key table size mismatch; using the"
                                  " numpy tables", RuntimeWarning)
                    lib = None
        _native_state[key] = lib
        return lib


_NATIVE_TABLE_WORDS = 16


def native_hash_available() -> bool:
    """True if the C++ polynomial-hash kernel (engine ``"native"``) builds and loads here."""
    return _native_lib() is not None


class _PolyHash:
    """h_k(S) = sum_i B_i k^(n+2-i) + len(S) k over GF(2^128): S zero-padded to n 16-byte blocks B_i
    (big-endian), then a length block holding the bit length of S (as GHASH).

    Engines (all compute the same polynomial, checked bit for bit in the tests):

    * ``"native"``: ``host/native/polyhash.cpp``, Horner's rule aggregated over 8 blocks with
      PCLMULQDQ carry-less multiplication and one reduction per 8 blocks (Gueron-Kounavis, Intel
      white paper 323640); a portable C fallback when the CPU has no carry-less multiply.
      The parts are hashed in place, no concatenation.
    * ``"tables"`` (numpy, when the kernel cannot build): short inputs run Horner's rule with
      Shoup tables for k (about 1 us per block). Long inputs are cut in chunks of ``CHUNK_BLOCKS``
      blocks; the hash of a chunk is GF(2)-linear in its bytes, so it is one table lookup per
      byte (tables indexed by the public message bytes, contents derived from k) and an XOR
      reduction, vectorised in numpy; the chunk hashes are then combined by Horner's rule in
      K = k^CHUNK_BLOCKS. The chunk tables (2 MiB, ~4 ms to build) are built once the key has
      hashed a long input (``vector_min_blocks``) or enough short ones (``_BUILD_AFTER_BLOCKS``
      in total); from then on every input of ``_VECTOR_FROM_BLOCKS`` blocks or more takes the
      vectorised path. ``vector_min_blocks=None``: Horner only.
    * ``"horner"``: Horner's rule with Shoup tables only (the reference and benchmark baseline).
    * ``"auto"`` (default): ``"native"`` if the kernel is available (see ``QKDLINK_AUTH_NATIVE``),
      else ``"tables"``.
    """

    CHUNK_BLOCKS = 32
    _BATCH_CHUNKS = 64
    _VECTOR_FROM_BLOCKS = 12
    _BUILD_AFTER_BLOCKS = 8192

    def __init__(self, key: int, vector_min_blocks: int | None = 512, *, engine: str = "auto"):
        if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key <= _MASK128:
            raise ValueError("hash key must be an int in [0, 2^128)")
        if engine not in HASH_ENGINES:
            raise ValueError(f"engine = {engine!r}: must be one of {', '.join(HASH_ENGINES)}")
        lib = _native_lib() if engine in ("auto", "native") else None
        if engine == "native" and lib is None:
            raise RuntimeError("engine = 'native': the polyhash C++ kernel is not available "
                               f"(build failed, or {_NATIVE_ENV}=0)")
        self._k = key
        self._tk = _mul_table(key) if lib is None else ()   # Shoup tables: the Python engines only
        self.vector_min_blocks = None if engine == "horner" else vector_min_blocks
        self._horner_blocks = 0
        self._vec = None  # (table_hi, table_lo, base, tK)
        self._lib = lib
        self._ktab = self._ktab_ptr = None
        if lib is not None:
            self._ktab = np.zeros(_NATIVE_TABLE_WORDS, dtype=np.uint64)
            self._ktab_ptr = self._ktab.ctypes.data
            lib.ph_init(key & _MASK64, key >> 64, self._ktab_ptr)
        self.engine = "native" if lib is not None else ("horner" if self.vector_min_blocks is None else "tables")

    def wipe(self) -> None:
        if self._vec is not None:
            self._vec[0].fill(0)
            self._vec[1].fill(0)
        self._vec = None
        if self._ktab is not None:
            self._ktab.fill(0)
        self._ktab = None
        self._lib = None
        self._ktab_ptr = None
        self._tk = ()
        self._k = 0

    def _build_vector_tables(self):
        C = self.CHUNK_BLOCKS
        powers = [0, self._k]                       # powers[e] = k^e
        for _ in range(C - 1):
            powers.append(_tmul(self._tk, powers[-1]))
        basis = []                                  # basis[16j + q][i] = x^(8(15-q)+i) k^(C-j)
        for j in range(C):
            v = powers[C - j]
            cols = []
            for _ in range(128):
                cols.append(v)
                v = _xtime(v)
            for q in range(16):
                s = 8 * (15 - q)
                basis.extend(cols[s:s + 8])
        positions = 16 * C
        b_hi = np.array([x >> 64 for x in basis], dtype=np.uint64).reshape(positions, 8)
        b_lo = np.array([x & _MASK64 for x in basis], dtype=np.uint64).reshape(positions, 8)
        t_hi = np.zeros((positions, 256), dtype=np.uint64)
        t_lo = np.zeros((positions, 256), dtype=np.uint64)
        for i in range(8):                          # entry v = XOR of the basis images of v's bits
            n = 1 << i
            np.bitwise_xor(t_hi[:, :n], b_hi[:, i:i + 1], out=t_hi[:, n:2 * n])
            np.bitwise_xor(t_lo[:, :n], b_lo[:, i:i + 1], out=t_lo[:, n:2 * n])
        base = np.arange(positions, dtype=np.intp) * 256
        self._vec = (t_hi.ravel(), t_lo.ravel(), base, _mul_table(powers[C]))

    def digest(self, parts: Iterable[bytes]) -> int:
        """The 128-bit hash of the concatenation of ``parts`` (bytes-like objects)."""
        if self._lib is not None:
            return self._native(parts)
        parts = [memoryview(p).cast("B") for p in parts]
        n_bytes = sum(len(p) for p in parts)
        n_blocks = -(-n_bytes // 16)
        vmin = self.vector_min_blocks                # None: Horner only (the benchmark's baseline)
        if self._vec is None and vmin is not None and (
                n_blocks >= vmin or self._horner_blocks + n_blocks >= self._BUILD_AFTER_BLOCKS):
            self._build_vector_tables()
        if self._vec is not None and n_blocks >= min(self._VECTOR_FROM_BLOCKS, vmin):
            acc = self._chunked(parts, n_bytes, n_blocks)
        else:
            self._horner_blocks += n_blocks
            acc = self._horner(b"".join(parts), n_bytes)
        return _tmul(self._tk, acc ^ (8 * n_bytes))

    def _native(self, parts) -> int:
        ptrs, lens, keep = [], [], []
        for p in parts:
            if isinstance(p, bytes):
                ptrs.append(p)                         # ctypes passes a pointer to the bytes' buffer
                lens.append(len(p))
                keep.append(p)
                continue
            m = memoryview(p)
            if not m.contiguous:
                raise ValueError("hash input parts must be contiguous buffers")
            n = m.nbytes
            if n == 0:
                continue
            if m.readonly:
                a = np.frombuffer(m, dtype=np.uint8)   # no copy
                keep.append(a)
                ptrs.append(a.ctypes.data)
            else:
                c = ctypes.c_char.from_buffer(m)       # no copy
                keep.append(c)
                ptrs.append(ctypes.addressof(c))
            lens.append(n)
        out = (ctypes.c_uint64 * 2)()
        if len(ptrs) <= 2:
            ptrs += [None] * (2 - len(ptrs))
            lens += [0] * (2 - len(lens))
            self._lib.ph_digest2(self._ktab_ptr, ptrs[0], lens[0], ptrs[1], lens[1], out)
        else:
            n = len(ptrs)
            ptrs = [ctypes.cast(q, ctypes.c_void_p).value if isinstance(q, bytes) else q for q in ptrs]
            self._lib.ph_digest(self._ktab_ptr, n, (ctypes.c_void_p * n)(*ptrs), (ctypes.c_uint64 * n)(*lens), out)
        del keep
        return (out[1] << 64) | out[0]

    def _horner(self, data: bytes, n_bytes: int) -> int:
        tk = self._tk
        acc = 0
        full = n_bytes - n_bytes % 16
        from_bytes = int.from_bytes
        for i in range(0, full, 16):
            r = 0
            for row, byte in zip(tk, (acc ^ from_bytes(data[i:i + 16], "big")).to_bytes(16, "little")):
                r ^= row[byte]
            acc = r
        if full < n_bytes:
            acc = _tmul(tk, acc ^ from_bytes(data[full:].ljust(16, b"\0"), "big"))
        return acc

    def _chunked(self, parts, n_bytes: int, n_blocks: int) -> int:
        t_hi, t_lo, base, t_big = self._vec
        C = self.CHUNK_BLOCKS
        front = (-n_blocks) % C                     # leading zero blocks do not change the polynomial
        buf = np.zeros((front + n_blocks) * 16, dtype=np.uint8)
        at = front * 16
        for p in parts:
            buf[at:at + len(p)] = np.frombuffer(p, dtype=np.uint8)
            at += len(p)
        chunks = buf.reshape(-1, 16 * C)
        hi = np.empty(len(chunks), dtype=np.uint64)
        lo = np.empty(len(chunks), dtype=np.uint64)
        for s in range(0, len(chunks), self._BATCH_CHUNKS):
            idx = chunks[s:s + self._BATCH_CHUNKS].astype(np.intp)
            idx += base
            hi[s:s + self._BATCH_CHUNKS] = np.bitwise_xor.reduce(t_hi[idx], axis=1)
            lo[s:s + self._BATCH_CHUNKS] = np.bitwise_xor.reduce(t_lo[idx], axis=1)
        acc = 0
        for h, l in zip(hi.tolist(), lo.tolist()):
            r = 0
            for row, byte in zip(t_big, acc.to_bytes(16, "little")):
                r ^= row[byte]
            acc = r ^ ((h << 64) | l)
        return acc


def poly_hash(key: int, data: bytes) -> int:
    """The 128-bit polynomial hash h_key(data) (see :class:`_PolyHash`); a one-off convenience."""
    return _PolyHash(key).digest([data])


# ----------------------------------------------------------------------------------------------
# Security parameters.

HEADER_BYTES = 44


def hash_blocks(message_bytes: int) -> int:
    """L = number of field elements the hash evaluates for a message: data blocks + length block."""
    return -(-message_bytes // 16) + 1


def epsilon_per_message(payload_bytes: int, tag_bits: int) -> float:
    """Forgery probability bound for one frame carrying up to ``payload_bytes``: L / 2^t.

    Two distinct authenticated strings of at most L blocks (length block included) differ by a
    nonzero polynomial in k of degree <= L without constant term, so for any t-bit value c at
    most L * 2^(128-t) keys make the top t bits of the difference equal c (Bierbrauer et al.
    1993; truncation is GF(2)-linear). The family is therefore L/2^t-almost-XOR-universal and,
    with a fresh one-time pad on the tag, a substitution succeeds with probability <= L/2^t
    (Wegman-Carter 1981); an impersonation with probability 2^-t <= L/2^t.
    """
    if payload_bytes < 0:
        raise ValueError(f"payload_bytes = {payload_bytes}: must be >= 0")
    _check_tag_bits(tag_bits)
    return math.ldexp(hash_blocks(HEADER_BYTES + payload_bytes), -tag_bits)


def tag_bits_for(target_epsilon: float, max_payload_bytes: int) -> int:
    """Smallest tag length (a multiple of 8, at most 128) with epsilon_per_message <= target."""
    if not 0.0 < target_epsilon <= 1.0:
        raise ValueError(f"target_epsilon = {target_epsilon!r}: must be in (0, 1]")
    need = math.log2(hash_blocks(HEADER_BYTES + max_payload_bytes)) - math.log2(target_epsilon)
    t = max(8, 8 * math.ceil(need / 8))
    while t <= 128 and epsilon_per_message(max_payload_bytes, t) > target_epsilon:
        t += 8                                      # guard against rounding in log2
    if t > 128:
        raise ValueError(f"target_epsilon = {target_epsilon!r} with max_payload_bytes = {max_payload_bytes}"
                         f" needs a {math.ceil(need)}-bit tag: must be reachable with at most 128 bits;"
                         " lower max_payload_bytes or raise target_epsilon")
    return t


def _check_tag_bits(tag_bits) -> None:
    if isinstance(tag_bits, bool) or not isinstance(tag_bits, int) or not 8 <= tag_bits <= 128 or tag_bits % 8:
        raise ValueError(f"tag_bits = {tag_bits!r}: must be a multiple of 8 in [8, 128]")


DEFAULT_TAG_BITS = tag_bits_for(DEFAULT_TARGET_EPSILON, DEFAULT_MAX_PAYLOAD_BYTES)   # 88


# ----------------------------------------------------------------------------------------------
# Errors.

class KeyExhausted(RuntimeError):
    """Not enough key bits left in a stream. Nothing was consumed; replenish and retry."""


class Reject(str, enum.Enum):
    """Why a frame was rejected (or why a session is unusable)."""
    BAD_TAG = "bad-tag"
    REPLAY = "replay"
    OUT_OF_ORDER = "out-of-order"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    WRONG_SESSION = "wrong-session"
    WRONG_DIRECTION = "wrong-direction"
    TOO_LONG = "too-long"
    KEY_DESYNC = "key-desync"
    ABORTED = "aborted"


class AuthenticationError(Exception):
    """A frame was rejected; the session is aborted. ``reason`` is a :class:`Reject`."""

    def __init__(self, reason: Reject, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class SessionAborted(AuthenticationError):
    """Any call on a session after it was aborted. ``cause`` is the reason of the abort."""

    def __init__(self, cause: Reject, detail: str):
        super().__init__(Reject.ABORTED, f"session aborted earlier ({cause.value}: {detail})")
        self.cause = cause


class SessionClosed(RuntimeError):
    """Any call on a session after :meth:`Authenticator.close`."""


# ----------------------------------------------------------------------------------------------
# Key pool.

class Draw(NamedTuple):
    """One hand-out of key bits (positions only, never the bits): audit trail for tests."""
    stream: str
    offset: int                 # position in the stream of the first bit
    n_bits: int
    purpose: str                # "hash-key", "otp", "discard", or the caller's label
    global_ranges: tuple        # ((start, end), ...) in the order the bits entered the pool


@dataclass
class _Stream:
    name: str
    segments: deque             # [global_start, bits (np.uint8 0/1), read index]
    received: int = 0           # bits ever put into the stream
    position: int = 0           # bits handed out or discarded (= offset of the next bit)
    discarded: int = 0
    slot_bits: int | None = None
    lease: object = None        # weakref to the Authenticator using the stream
    hasher: _PolyHash | None = None
    tags: int = 0               # tags computed with this stream's hash key (sealed + verified)
    forgery_probability: float = 0.0

    @property
    def available(self) -> int:
        return self.received - self.position


def _as_bits(material, what: str) -> np.ndarray:
    if isinstance(material, (bytes, bytearray, memoryview)):
        return np.unpackbits(np.frombuffer(bytes(material), dtype=np.uint8))
    if isinstance(material, np.ndarray) and material.ndim == 1 and material.dtype.kind in "uib":
        bits = material.astype(np.uint8, copy=True)
        if bits.size and bits.max() > 1:
            raise ValueError(f"{what}: a bit array must hold only 0 and 1")
        return bits
    raise TypeError(f"{what}: expected bytes or a 1-D numpy array of bits, got {type(material).__name__}")


class KeyPool:
    """One endpoint's authentication key: two direction streams, bits handed out exactly once.

    Bootstrapped from a pre-shared key: its first 128 bits are the hash key of ``alice->bob``,
    the next 128 the hash key of ``bob->alice`` (recycled for the life of the pool, Portmann
    2014); the rest is split in halves, first half ``alice->bob``, second half ``bob->alice``, as
    one-time-pad bits. :meth:`replenish` adds bits from generated QKD key the same way (or to
    one stream). Both endpoints must bootstrap and replenish their pools identically; a pool must
    never be bootstrapped twice from the same key (the pads would be reused).

    Bits leave a stream only through :meth:`take` (or an :class:`Authenticator`), in stream
    order, all or nothing: :class:`KeyExhausted` leaves the pool untouched. Handed-out bits are
    zeroed in the pool. ``repr``, :meth:`stats` and logs show counts and positions, never bits.
    Copying or pickling a pool is refused (a copy would hand out the same bits twice).
    """

    def __init__(self, preshared_key, *, audit: bool = False):
        bits = _as_bits(preshared_key, "preshared_key")
        if bits.size < 2 * HASH_KEY_BITS:
            raise ValueError(f"preshared_key has {bits.size} bits: must have at least {2 * HASH_KEY_BITS}"
                             " (two 128-bit hash keys), plus one-time-pad bits for the first messages")
        self._lock = threading.Lock()
        self._streams = {name: _Stream(name, deque()) for name in STREAMS}
        self._global = 0
        self._audit = [] if audit else None
        self._closed = False
        for i, name in enumerate(STREAMS):
            key_bits = bits[i * HASH_KEY_BITS:(i + 1) * HASH_KEY_BITS]
            key = int.from_bytes(np.packbits(key_bits).tobytes(), "big")
            self._streams[name].hasher = _PolyHash(key)
            if self._audit is not None:
                self._audit.append(Draw(name, -1, HASH_KEY_BITS, "hash-key",
                                        ((i * HASH_KEY_BITS, (i + 1) * HASH_KEY_BITS),)))
        bits[:2 * HASH_KEY_BITS] = 0
        self._global = 2 * HASH_KEY_BITS
        self._add(bits[2 * HASH_KEY_BITS:], None)

    # -- filling
    def replenish(self, material, *, stream: str | None = None) -> None:
        """Add key bits (bytes, or a 1-D array of 0/1 bits): split in halves between the two
        streams (first half ``alice->bob``), or all to ``stream``."""
        bits = _as_bits(material, "replenish material")
        if stream is not None:
            self._stream(stream)
        with self._lock:
            self._check_open()
            self._add(bits, stream)

    def _add(self, bits: np.ndarray, stream: str | None) -> None:
        if stream is None:
            half = bits.size - bits.size // 2
            pieces = ((STREAMS[0], bits[:half]), (STREAMS[1], bits[half:]))
        else:
            pieces = ((stream, bits),)
        for name, piece in pieces:       # `bits` is the pool's own copy (see _as_bits)
            if piece.size:
                s = self._streams[name]
                s.segments.append([self._global, piece, 0])
                s.received += piece.size
            self._global += piece.size

    # -- handing out
    def take(self, n_bits: int, *, stream: str, purpose: str = "external") -> bytes:
        """Hand out the next ``n_bits`` of ``stream`` exactly once, as bytes (bits MSB first, the
        last byte zero-padded). Raises :class:`KeyExhausted` (nothing consumed) if fewer remain.
        Refused while an :class:`Authenticator` uses the stream. Both endpoints must take the
        same bits for the same purpose."""
        if isinstance(n_bits, bool) or not isinstance(n_bits, int) or n_bits < 0:
            raise ValueError(f"n_bits = {n_bits!r}: must be an int >= 0")
        with self._lock:
            self._check_open()
            s = self._stream(stream)
            if self._leaseholder(s) is not None:
                raise RuntimeError(f"key stream {stream!r} is in use by an Authenticator; take() would"
                                   " desynchronise its one-time pads")
            if n_bits == 0:
                return b""
            self._need(s, n_bits, purpose)
            return np.packbits(self._pop(s, n_bits, purpose)).tobytes()

    def discard_to(self, stream: str, position: int) -> int:
        """Drop the bits of ``stream`` before ``position`` (never used, counted as discarded);
        returns how many. Positions are public: resynchronising two pools after an aborted
        session means moving both to the larger position, which is always safe."""
        with self._lock:
            self._check_open()
            s = self._stream(stream)
            if self._leaseholder(s) is not None:
                raise RuntimeError(f"key stream {stream!r} is in use by an Authenticator")
            n = position - s.position
            if n <= 0:
                return 0
            self._need(s, n, "discard")
            self._pop(s, n, "discard")
            return n

    def _need(self, s: _Stream, n: int, what: str) -> None:
        if n > s.available:
            raise KeyExhausted(f"key stream {s.name!r}: {n} bits needed ({what}), {s.available} available;"
                               " nothing was consumed; replenish the pool")

    def _pop(self, s: _Stream, n: int, purpose: str) -> np.ndarray:
        """Remove the next n bits (caller checked availability), zero them in the pool, record."""
        out = np.empty(n, dtype=np.uint8)
        got, ranges, offset = 0, [], s.position
        while got < n:
            seg = s.segments[0]
            start, bits, at = seg
            k = min(n - got, bits.size - at)
            out[got:got + k] = bits[at:at + k]
            bits[at:at + k] = 0
            ranges.append((start + at, start + at + k))
            seg[2] = at + k
            got += k
            if seg[2] == bits.size:
                s.segments.popleft()
        s.position += n
        if purpose == "discard":
            s.discarded += n
        if self._audit is not None:
            self._audit.append(Draw(s.name, offset, n, purpose, tuple(ranges)))
        return out

    # -- used by Authenticator
    def _lease(self, streams: tuple[str, ...], owner, slot_bits: int) -> None:
        """Give ``owner`` exclusive use of ``streams`` (all or none), laid out in ``slot_bits`` slots."""
        with self._lock:
            self._check_open()
            for s in map(self._stream, streams):
                if self._leaseholder(s) is not None:
                    raise RuntimeError(f"key stream {s.name!r} of this KeyPool is in use by another"
                                       " Authenticator; close it first (each endpoint needs its own KeyPool)")
                if s.slot_bits is not None and s.slot_bits != slot_bits:
                    raise ValueError(f"tag_bits = {slot_bits}: key stream {s.name!r} is laid out in {s.slot_bits}-bit"
                                     f" one-time-pad slots; every session on this pool must use"
                                     f" tag_bits = {s.slot_bits}")
            for s in map(self._stream, streams):
                s.slot_bits = slot_bits
                s.lease = weakref.ref(owner)

    def _release(self, stream: str, owner) -> None:
        with self._lock:
            s = self._streams[stream]
            if self._leaseholder(s) is owner:
                s.lease = None

    def _take_slot(self, stream: str, owner, slot: int, max_skip_bits: int | None) -> tuple[int, int]:
        """Discard up to one-time-pad slot ``slot`` and take it, atomically. Returns (pad as int,
        bits discarded). ValueError if the slot is behind the stream or too far ahead."""
        with self._lock:
            self._check_open()
            s = self._streams[stream]
            assert self._leaseholder(s) is owner, "stream not leased by this Authenticator"
            t = s.slot_bits
            start = slot * t
            skip = start - s.position
            if skip < 0:
                raise ValueError(f"one-time-pad slot {slot} starts at bit {start}, behind the stream position"
                                 f" {s.position}: those bits were already used or discarded")
            if max_skip_bits is not None and skip > max_skip_bits:
                raise ValueError(f"one-time-pad slot {slot} would discard {skip} bits, more than"
                                 f" max_skip_bits = {max_skip_bits}")
            self._need(s, skip + t, "one-time pad" + (f" after discarding {skip}" if skip else ""))
            if skip:
                self._pop(s, skip, "discard")
            pad = int.from_bytes(np.packbits(self._pop(s, t, "otp")).tobytes(), "big")
            return pad, skip

    def _hasher(self, stream: str) -> _PolyHash:
        self._check_open()
        return self._streams[stream].hasher

    def _count_tag(self, stream: str, epsilon: float) -> None:
        with self._lock:
            s = self._streams[stream]
            s.tags += 1
            s.forgery_probability += epsilon

    def _leaseholder(self, s: _Stream):
        return s.lease() if s.lease is not None else None

    def _stream(self, name: str) -> _Stream:
        try:
            return self._streams[name]
        except (KeyError, TypeError):
            raise ValueError(f"stream = {name!r}: must be one of {', '.join(map(repr, STREAMS))}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("KeyPool is closed (its key material was wiped)")

    # -- inspection (counts and positions only)
    def available(self, stream: str) -> int:
        return self._stream(stream).available

    def position(self, stream: str) -> int:
        """Offset of the next unused bit of ``stream`` (bits handed out + discarded)."""
        return self._stream(stream).position

    def slot_bits(self, stream: str) -> int | None:
        return self._stream(stream).slot_bits

    def stats(self) -> dict:
        """Per stream: bits received, handed out, discarded, available; tags and the summed
        forgery probability of every tag made with the stream's hash key over the pool's life."""
        out = {}
        with self._lock:
            for name, s in self._streams.items():
                out[name] = {"hash_key_bits": HASH_KEY_BITS, "received_bits": s.received,
                             "position": s.position, "consumed_bits": s.position - s.discarded,
                             "discarded_bits": s.discarded, "available_bits": s.available,
                             "slot_bits": s.slot_bits, "tags": s.tags,
                             "forgery_probability": s.forgery_probability}
        return out

    def draws(self) -> tuple[Draw, ...]:
        """Audit trail of every hand-out (positions, never bits); needs ``KeyPool(..., audit=True)``."""
        if self._audit is None:
            raise RuntimeError("this KeyPool keeps no audit trail; create it with audit=True")
        with self._lock:
            return tuple(self._audit)

    def close(self) -> None:
        """Wipe the key material held by the pool (best effort in Python) and refuse further use."""
        with self._lock:
            for s in self._streams.values():
                for seg in s.segments:
                    seg[1][:] = 0
                s.segments.clear()
                if s.hasher is not None:
                    s.hasher.wipe()
                s.hasher = None
            self._closed = True

    def __repr__(self) -> str:
        parts = [f"{n}: {s.available} bits available, {s.position} used" for n, s in self._streams.items()]
        return f"KeyPool({'; '.join(parts)}{', closed' if self._closed else ''})"

    def __copy__(self):
        raise TypeError("a KeyPool cannot be copied: both copies would hand out the same key bits")

    def __deepcopy__(self, memo):
        raise TypeError("a KeyPool cannot be copied: both copies would hand out the same key bits")

    def __reduce_ex__(self, protocol):
        raise TypeError("a KeyPool cannot be pickled: persist it through the key store, which records"
                        " what was used")


# ----------------------------------------------------------------------------------------------
# Sessions.

_MAGIC = b"QA"
_VERSION = 1
_HEADER = struct.Struct(">2sBBB3s16sQQI")
assert _HEADER.size == HEADER_BYTES
SESSION_ID_BYTES = 16


class Authenticator:
    """One authenticated session of one endpoint: ``seal`` outgoing payloads, ``open`` incoming frames.

    Frame (big-endian): ``"QA" | version 1 | direction (0 alice->bob, 1 bob->alice) | tag bytes |
    3 zero bytes | session id (16) | one-time-pad slot (u64) | sequence number (u64) | payload
    length (u32) | payload | tag``; the tag authenticates everything before it. Sequence numbers
    start at 0 in each direction and must arrive in order. The one-time pad of a frame is slot
    ``j`` of the sending direction's stream, bits ``[j t, (j+1) t)``: a slot has the same role on
    both ends whatever happened before, so a receiver that fell behind (after an aborted session)
    skips forward to the sender's slot safely, at most ``max_skip_bits``.

    Any rejected frame aborts the session (:class:`AuthenticationError` with the reason, then
    :class:`SessionAborted` on every later call). :class:`KeyExhausted` is not a rejection:
    nothing changes; replenish the pool and call again.
    """

    def __init__(self, role: str, key_pool: KeyPool, session_id: bytes, *, tag_bits: int | None = None,
                 target_epsilon: float = DEFAULT_TARGET_EPSILON,
                 max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
                 max_skip_bits: int | None = DEFAULT_MAX_SKIP_BITS):
        if role not in ROLES:
            raise ValueError(f"role = {role!r}: must be one of {', '.join(map(repr, ROLES))}")
        if not isinstance(key_pool, KeyPool):
            raise TypeError(f"key_pool: expected a KeyPool, got {type(key_pool).__name__}")
        if not isinstance(session_id, (bytes, bytearray)) or len(session_id) != SESSION_ID_BYTES:
            raise ValueError(f"session_id = {session_id!r}: must be {SESSION_ID_BYTES} bytes (e.g. uuid4().bytes)")
        if isinstance(max_payload_bytes, bool) or not isinstance(max_payload_bytes, int) \
                or not 0 <= max_payload_bytes <= 0xFFFFFFFF:
            raise ValueError(f"max_payload_bytes = {max_payload_bytes!r}: must be an int in [0, 2^32 - 1]")
        if max_skip_bits is not None and (not isinstance(max_skip_bits, int) or max_skip_bits < 0):
            raise ValueError(f"max_skip_bits = {max_skip_bits!r}: must be None or an int >= 0")
        if not (isinstance(target_epsilon, (int, float)) and 0.0 < target_epsilon <= 1.0):
            raise ValueError(f"target_epsilon = {target_epsilon!r}: must be in (0, 1]")
        if tag_bits is None:
            tag_bits = tag_bits_for(target_epsilon, max_payload_bytes)
        _check_tag_bits(tag_bits)
        eps = epsilon_per_message(max_payload_bytes, tag_bits)
        if eps > target_epsilon:
            raise ValueError(f"tag_bits = {tag_bits}: gives epsilon = 2^{math.log2(eps):.2f} per message for"
                             f" max_payload_bytes = {max_payload_bytes}, above target_epsilon ="
                             f" 2^{math.log2(target_epsilon):.2f}; use at least"
                             f" {tag_bits_for(target_epsilon, max_payload_bytes)} bits")
        self.role = role
        self.session_id = bytes(session_id)
        self.tag_bits = tag_bits
        self.max_payload_bytes = max_payload_bytes
        self.max_skip_bits = max_skip_bits
        self.epsilon_per_message = eps
        self._pool = key_pool
        self._send = _SEND_STREAM[role]
        self._recv = _RECV_STREAM[role]
        self._tag_bytes = tag_bits // 8
        self._state = "open"
        self._abort: tuple[Reject, str] | None = None
        self._lock = threading.Lock()
        key_pool._lease((self._send, self._recv), self, tag_bits)
        self._dir = {s: {"stream": s, "first_slot": None, "messages": 0, "payload_bytes": 0, "otp_bits": 0,
                         "discarded_bits": 0, "tags": 0, "forgery_probability": 0.0}
                     for s in (self._send, self._recv)}
        self._dir[self._recv]["rejected"] = 0

    # -- public API
    def seal(self, payload) -> bytes:
        """Frame and tag ``payload``; consumes ``tag_bits`` one-time-pad bits of the send stream."""
        payload = bytes(payload)
        with self._lock:
            self._check_usable()
            if len(payload) > self.max_payload_bytes:
                raise ValueError(f"payload of {len(payload)} bytes: must be at most max_payload_bytes ="
                                 f" {self.max_payload_bytes}")
            d = self._dir[self._send]
            if d["first_slot"] is None:
                t = self.tag_bits
                slot = -(-self._pool.position(self._send) // t)   # next whole slot
            else:
                slot = d["first_slot"] + d["messages"]
            pad, skipped = self._pool._take_slot(self._send, self, slot, None)
            if d["first_slot"] is None:
                d["first_slot"] = slot
            header = _HEADER.pack(_MAGIC, _VERSION, _DIRECTION_CODE[self._send], self._tag_bytes, b"\0\0\0",
                                  self.session_id, slot, d["messages"], len(payload))
            tag = self._tag(self._send, header, payload, pad)
            del pad
            d["messages"] += 1
            d["payload_bytes"] += len(payload)
            d["otp_bits"] += self.tag_bits
            d["discarded_bits"] += skipped
            self._count(self._send)
            log.debug("auth %s %s: sealed seq %d, %d payload bytes", self._sid(), self._send,
                      d["messages"] - 1, len(payload))
            return header + payload + tag

    def open(self, frame) -> bytes:
        """Check ``frame`` and return its payload, or raise :class:`AuthenticationError` and abort."""
        frame = bytes(frame)
        with self._lock:
            self._check_usable()
            d = self._dir[self._recv]
            if len(frame) < HEADER_BYTES:
                self._reject(Reject.TRUNCATED, f"{len(frame)} bytes, shorter than the {HEADER_BYTES}-byte header")
            magic, version, direction, tag_bytes, reserved, sid, slot, seq, n = _HEADER.unpack_from(frame)
            if magic != _MAGIC or version != _VERSION or reserved != b"\0\0\0":
                self._reject(Reject.MALFORMED, "not a version-1 authenticated frame")
            if tag_bytes != self._tag_bytes:
                self._reject(Reject.MALFORMED, f"tag of {tag_bytes} bytes, this session uses {self._tag_bytes}")
            if direction != _DIRECTION_CODE[self._recv]:
                self._reject(Reject.WRONG_DIRECTION, f"frame is not {self._recv} (a reflected frame?)")
            if sid != self.session_id:
                self._reject(Reject.WRONG_SESSION, f"session {sid.hex()[:16]}..., expected {self._sid()}...")
            if n > self.max_payload_bytes:
                self._reject(Reject.TOO_LONG, f"payload length {n} above max_payload_bytes = {self.max_payload_bytes}")
            expected = HEADER_BYTES + n + self._tag_bytes
            if len(frame) < expected:
                self._reject(Reject.TRUNCATED, f"{len(frame)} bytes, the header announces {expected}")
            if len(frame) > expected:
                self._reject(Reject.MALFORMED, f"{len(frame)} bytes, the header announces {expected}")
            if seq < d["messages"]:
                self._reject(Reject.REPLAY, f"sequence number {seq}, expected {d['messages']}")
            if seq > d["messages"]:
                self._reject(Reject.OUT_OF_ORDER, f"sequence number {seq}, expected {d['messages']}")
            if d["first_slot"] is not None and slot != d["first_slot"] + seq:
                self._reject(Reject.KEY_DESYNC, f"one-time-pad slot {slot}, expected {d['first_slot'] + seq}")
            try:
                pad, skipped = self._pool._take_slot(self._recv, self, slot, self.max_skip_bits)
            except ValueError as e:
                self._reject(Reject.KEY_DESYNC, str(e))
            if d["first_slot"] is None:
                d["first_slot"] = slot
            d["otp_bits"] += self.tag_bits
            d["discarded_bits"] += skipped
            self._count(self._recv)
            header, payload, tag = frame[:HEADER_BYTES], frame[HEADER_BYTES:HEADER_BYTES + n], frame[HEADER_BYTES + n:]
            ok = hmac.compare_digest(tag, self._tag(self._recv, header, payload, pad))
            del pad
            if not ok:
                d["rejected"] += 1
                self._reject(Reject.BAD_TAG, f"tag does not verify (sequence number {seq})")
            d["messages"] += 1
            d["payload_bytes"] += n
            log.debug("auth %s %s: accepted seq %d, %d payload bytes", self._sid(), self._recv, seq, n)
            return payload

    def close(self) -> None:
        """End the session (normal end): releases the pool's streams for the next session."""
        with self._lock:
            if self._state == "open":
                self._state = "closed"
            self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def state(self) -> str:
        """``"open"``, ``"aborted"`` or ``"closed"``."""
        return self._state

    @property
    def abort_reason(self) -> Reject | None:
        return self._abort[0] if self._abort else None

    def ledger(self) -> dict:
        """Key bits consumed, messages and forgery-probability bound of this session, per direction.

        ``forgery_probability`` sums ``epsilon_per_message`` over every tag made in this session
        (sealed or verified, the rejected one included): the session's contribution to the
        authentication error epsilon_auth (Portmann 2014: linear in the messages). For a session
        that ended normally both endpoints report the same numbers.
        """
        with self._lock:
            dirs = {}
            for key, s in (("send", self._send), ("receive", self._recv)):
                d = dict(self._dir[s])
                d["key_bits_consumed"] = d["otp_bits"] + d["discarded_bits"]
                dirs[key] = d
            return {
                "role": self.role, "session_id": self.session_id.hex(), "state": self._state,
                "abort_reason": self._abort[0].value if self._abort else None,
                "tag_bits": self.tag_bits, "max_payload_bytes": self.max_payload_bytes,
                "epsilon_per_message": self.epsilon_per_message,
                "hash_key_bits": 0,   # the hash keys are recycled from the pool (KeyPool.stats)
                **dirs,
                "messages": dirs["send"]["messages"] + dirs["receive"]["messages"],
                "key_bits_consumed": dirs["send"]["key_bits_consumed"] + dirs["receive"]["key_bits_consumed"],
                "forgery_probability": dirs["send"]["forgery_probability"] + dirs["receive"]["forgery_probability"],
            }

    def __repr__(self) -> str:
        if not hasattr(self, "_dir"):
            return "Authenticator(<not initialised>)"
        s, r = self._dir[self._send], self._dir[self._recv]
        return (f"Authenticator(role={self.role!r}, session={self._sid()}..., state={self._state!r},"
                f" tag_bits={self.tag_bits}, sent={s['messages']}, received={r['messages']})")

    def __reduce_ex__(self, protocol):
        raise TypeError("an Authenticator cannot be pickled")

    # -- internals
    def _tag(self, stream: str, header: bytes, payload: bytes, pad: int) -> bytes:
        h = self._pool._hasher(stream).digest((header, payload))
        return ((h >> (128 - self.tag_bits)) ^ pad).to_bytes(self._tag_bytes, "big")

    def _count(self, stream: str) -> None:
        d = self._dir[stream]
        d["tags"] += 1
        d["forgery_probability"] += self.epsilon_per_message
        self._pool._count_tag(stream, self.epsilon_per_message)

    def _sid(self) -> str:
        return self.session_id.hex()[:16]

    def _check_usable(self) -> None:
        if self._state == "aborted":
            raise SessionAborted(*self._abort)
        if self._state == "closed":
            raise SessionClosed("this authentication session was closed; start a new one")

    def _reject(self, reason: Reject, detail: str):
        self._state = "aborted"
        self._abort = (reason, detail)
        self._release()
        log.warning("auth %s (%s): frame rejected, session aborted: %s: %s", self._sid(), self.role,
                    reason.value, detail)
        raise AuthenticationError(reason, detail)

    def _release(self) -> None:
        self._pool._release(self._send, self)
        self._pool._release(self._recv, self)
