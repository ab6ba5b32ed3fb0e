"""Key distillation: from both ends' sifted keys to identical secret keys, over an authenticated channel.

Two objects, :class:`AliceEnd` and :class:`BobEnd`, each hold ONLY their own sifted rows and their
own :class:`~qkdlink.host.auth.KeyPool`, and talk through a :class:`Channel` of byte frames. Every
classical message is framed and tagged by an :class:`~qkdlink.host.auth.Authenticator`
(Wegman-Carter, one-time-padded tags) and every rejected frame aborts the block. Per block
(``docs/distillation.md`` has the message table)::

    A->B hello        session parameters and a SHA-256 of the sifted (slot, basis, intensity) list
    A->B test_bits    all of Alice's X-basis (test) bits
    A->B qber_sample  seed of the random Z-basis sample and Alice's bits there
    B->A estimate     X errors per intensity, sample errors, method and reconciliation seed (or abort)
    B->A / A->B rec   reconciliation queries and answers (Cascade parities or LDPC syndromes/reveals)
    B->A rec_done     disclosed bits, corrected errors, frames dropped
    A->B verify       universal-hash seed and Alice's tag (eps_cor)
    B->A verify_ok    equal or not (not equal: the block is discarded at both ends)
    A->B pa           key length and Toeplitz seed
    B->A confirm      SHA-256 of Bob's public ledger (both ends must agree on every number)
    A->B done         Alice's agreement; only now do both ends output key

Security accounting (Lim et al., PRA 89, 022307 (2014), via :mod:`qkdlink.host.estimation`): the
key length is ``floor(s_Z0 + s_Z1 (1 - h(phi)) - leaked_ec - sampled - t - 6 log2(21/eps_sec) -
log2(2/eps_cor))``; ``leaked_ec`` is every parity or syndrome bit the reconciliation disclosed,
counted by the protocol (not ``f h(Q)``), ``sampled`` the disclosed Z sample plus any LDPC frames
dropped (chain rule for min-entropy: removing d bits costs at most d bits, Renner 2005, Sec. 3.2),
``t`` the verification tag. Authentication consumes one-time-pad key (88 bits per message by
default): after the block, both ends refill each direction's pad stream with exactly the bits
that stream used in the block, taken from the front of the new key, and output the rest
(``auth_replenish_bits``). The authentication error adds to the block's:
``eps_total = eps_sec + eps_cor + forgery_probability`` (Portmann, IEEE TIT 60, 4383 (2014)).

Aborts raise :class:`DistillAbort` (or :class:`DistillInputError` for bad input) and no key, not
even a partial one, is returned; both ends' working key material is wiped.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import struct
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from . import estimation as est_mod
from .auth import (ALICE_TO_BOB, BOB_TO_ALICE, HEADER_BYTES, AuthenticationError, Authenticator, KeyExhausted,
                   KeyPool)
from .cascade import Cascade, CascadeAlice, binary_entropy
from .ldpc_reconcile import LdpcAlice, LdpcBob, LdpcParams, LdpcProtocolError, plan_frames, typical_efficiency
from .privacy import PrivacyAmplifier, bits_from_bytes
from .verify import tag_bits_for, verification_tag

__all__ = ["distill", "DistillResult", "Ledger", "BlockLedger", "DistillOptions", "AliceEnd", "BobEnd",
           "Channel", "DistillError", "DistillAbort", "DistillInputError", "MessageError",
           "encode_message", "decode_message", "simulation_preshared_key", "choose_method", "split_blocks",
           "key_fingerprint", "run_block", "PROTOCOL", "CASCADE_ROUNDS_ESTIMATE"]

PROTOCOL = "qkdlink-distill/1"
#: Round trips Cascade takes for 10^5-10^6-bit blocks at QBER 1-10 % (measured 157-1230, varying
#: with the permutation seed), used by ``auto`` to price Cascade's authentication (2 tags each).
CASCADE_ROUNDS_ESTIMATE = 1000
CASCADE_F_ESTIMATE = 1.05       # measured 1.03-1.06 at 10^5-10^6 bits, QBER 1-10 %
LDPC_MESSAGES_ESTIMATE = 30     # setup, up to 10 reveal rounds, frame check, done: 2 messages each
#: Largest reconciled block: its Toeplitz seed (n + m - 1 bits) must fit one authenticated message.
MAX_BLOCK_KEY_BITS = 60_000_000


# ----------------------------------------------------------------------------------------------
# Errors.

class DistillError(RuntimeError):
    """Base class. ``reason``: short code (``authentication``, ``estimation``, ``verification``, ...)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DistillAbort(DistillError):
    """A block was aborted: no key is output. ``block`` is its index, ``stage`` the protocol step."""

    def __init__(self, reason: str, detail: str, *, block: int | None = None, stage: str | None = None):
        where = f"block {block}" if block is not None else ""
        where += f" at {stage}" if stage else ""
        super().__init__(reason, f"{detail}" + (f" ({where.strip()})" if where else ""))
        self.block = block
        self.stage = stage


class DistillInputError(DistillError, ValueError):
    """Bad input before any message was sent (empty or malformed rows, bad parameters)."""

    def __init__(self, detail: str):
        super().__init__("input", detail)


class MessageError(ValueError):
    """A message payload does not decode (after authentication: a bug or a peer speaking another version)."""


# ----------------------------------------------------------------------------------------------
# Message codec: a small tagged binary format (dicts, lists, ints, floats, str, bytes, numpy arrays).
#
# Wire format (after the 3-byte magic), one value:
#   N | T | F                     None, True, False
#   i <i64>                       int in [-2^63, 2^63)
#   I <u32 n> <n bytes>           other ints, big-endian two's complement
#   f <f64>                       float
#   s <u32 n> <n bytes UTF-8>     str
#   b <u32 n> <n bytes>           bytes
#   a <dtype code> <u8 ndim> <i64 shape>*ndim <data, little-endian, C order>   numpy array
#   l <u32 n> <value>*n           list (tuples encode as lists)
#   d <u32 n> (<u32 len> <key UTF-8> <value>)*n   dict with str keys, in insertion order
# Numbers in headers are big-endian. Arrays are copied as one buffer each way (no per-element
# Python work); the codec is table-dispatched on the Python type / the tag byte.

_MAGIC = b"QD\x01"
_DTYPES = {"B": np.uint8, "?": np.bool_, "i": np.int32, "I": np.uint32, "q": np.int64, "Q": np.uint64,
           "d": np.float64}
_DTYPE_CODE = {np.dtype(v): k for k, v in _DTYPES.items()}
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_TAG_I64 = struct.Struct(">cq")
_TAG_F64 = struct.Struct(">cd")
_TAG_U32 = struct.Struct(">cI")
_MAX_DEPTH = 16
_MAX_NDIM = 8
_SHAPE = [struct.Struct(f">{n}q") for n in range(_MAX_NDIM + 1)]
# dtype -> (array header prefix "a" + code, the little-endian wire dtype)
_ARR_ENC = {dt: (b"a" + code.encode(), np.dtype(_DTYPES[code]).newbyteorder("<")) for dt, code in _DTYPE_CODE.items()}
# code byte -> (wire dtype, in-memory dtype)
_ARR_DEC = {ord(code): (np.dtype(t).newbyteorder("<"), np.dtype(t)) for code, t in _DTYPES.items()}


def _enc_none(v, out, depth):
    out.append(b"N")


def _enc_bool(v, out, depth):
    out.append(b"T" if v else b"F")


def _enc_int(v, out, depth):
    v = int(v)
    if -(1 << 63) <= v < (1 << 63):
        out.append(_TAG_I64.pack(b"i", v))
    else:
        raw = v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)
        out.append(_TAG_U32.pack(b"I", len(raw)))
        out.append(raw)


def _enc_float(v, out, depth):
    out.append(_TAG_F64.pack(b"f", float(v)))


def _enc_str(v, out, depth):
    raw = v.encode()
    out.append(_TAG_U32.pack(b"s", len(raw)))
    out.append(raw)


def _enc_bytes(v, out, depth):
    raw = bytes(v)
    out.append(_TAG_U32.pack(b"b", len(raw)))
    out.append(raw)


def _enc_array(v, out, depth):
    try:
        head, wire = _ARR_ENC[v.dtype]
    except KeyError:
        raise MessageError(f"array dtype {v.dtype} cannot be sent") from None
    if v.ndim > _MAX_NDIM:
        raise MessageError(f"array with more than {_MAX_NDIM} dimensions")
    out.append(head + bytes((v.ndim,)) + _SHAPE[v.ndim].pack(*v.shape))
    if v.dtype != wire or not v.flags.c_contiguous:
        v = np.ascontiguousarray(v, dtype=wire)
    out.append(v.tobytes())


def _enc_list(v, out, depth):
    if depth >= _MAX_DEPTH and len(v):
        raise MessageError("message nested too deeply")
    out.append(_TAG_U32.pack(b"l", len(v)))
    depth += 1
    for x in v:
        _ENC.get(type(x), _enc_other)(x, out, depth)


def _enc_dict(v, out, depth):
    if depth >= _MAX_DEPTH and len(v):
        raise MessageError("message nested too deeply")
    out.append(_TAG_U32.pack(b"d", len(v)))
    depth += 1
    pack = _U32.pack
    for k, x in v.items():
        if type(k) is not str and not isinstance(k, str):
            raise MessageError(f"dict key {k!r} is not a string")
        raw = k.encode()
        out.append(pack(len(raw)) + raw)
        _ENC.get(type(x), _enc_other)(x, out, depth)


def _enc_other(v, out, depth):
    """Subclasses and numpy scalars: the first matching rule, in the order of the format."""
    if v is None:
        f = _enc_none
    elif v is True or v is False or isinstance(v, np.bool_):
        f = _enc_bool
    elif isinstance(v, (int, np.integer)):
        f = _enc_int
    elif isinstance(v, (float, np.floating)):
        f = _enc_float
    elif isinstance(v, str):
        f = _enc_str
    elif isinstance(v, (bytes, bytearray, memoryview)):
        f = _enc_bytes
    elif isinstance(v, np.ndarray):
        f = _enc_array
    elif isinstance(v, (list, tuple)):
        f = _enc_list
    elif isinstance(v, dict):
        f = _enc_dict
    else:
        raise MessageError(f"cannot encode a {type(v).__name__}")
    f(v, out, depth)


_ENC = {type(None): _enc_none, bool: _enc_bool, np.bool_: _enc_bool, int: _enc_int, float: _enc_float,
        str: _enc_str, bytes: _enc_bytes, bytearray: _enc_bytes, memoryview: _enc_bytes,
        np.ndarray: _enc_array, list: _enc_list, tuple: _enc_list, dict: _enc_dict}
_ENC.update({t: _enc_int for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
                                   np.uint64)})
_ENC.update({t: _enc_float for t in (np.float16, np.float32, np.float64)})


def encode_message(obj) -> bytes:
    """Bytes of a message (dict/list/int/float/str/bytes/numpy array/None/bool, nested)."""
    out = [_MAGIC]
    _ENC.get(type(obj), _enc_other)(obj, out, 0)
    return b"".join(out)


def _truncated(at: int, n: int):
    raise MessageError(f"message truncated at byte {at} (needs {n} more)")


def _dec_none(d, at, depth):
    return None, at


def _dec_true(d, at, depth):
    return True, at


def _dec_false(d, at, depth):
    return False, at


def _dec_int(d, at, depth):
    if at + 8 > len(d):
        _truncated(at, 8)
    return _I64.unpack_from(d, at)[0], at + 8


def _dec_bigint(d, at, depth):
    n, at = _dec_len(d, at)
    return int.from_bytes(d[at:at + n], "big", signed=True), at + n


def _dec_float(d, at, depth):
    if at + 8 > len(d):
        _truncated(at, 8)
    return _F64.unpack_from(d, at)[0], at + 8


def _dec_len(d, at):
    """A u32 length and the bytes it announces must be there: (n, offset after the length)."""
    if at + 4 > len(d):
        _truncated(at, 4)
    n = _U32.unpack_from(d, at)[0]
    at += 4
    if at + n > len(d):
        _truncated(at, n)
    return n, at


def _dec_str(d, at, depth):
    n, at = _dec_len(d, at)
    try:
        return d[at:at + n].decode(), at + n
    except UnicodeDecodeError:
        raise MessageError("string is not UTF-8") from None


def _dec_bytes(d, at, depth):
    n, at = _dec_len(d, at)
    return d[at:at + n], at + n


def _dec_array(d, at, depth):
    if at + 2 > len(d):
        _truncated(at, 2)
    try:
        wire, native = _ARR_DEC[d[at]]
    except KeyError:
        raise MessageError(f"unknown array dtype code {chr(d[at])!r}") from None
    ndim = d[at + 1]
    if ndim > _MAX_NDIM:
        raise MessageError(f"array with more than {_MAX_NDIM} dimensions")
    at += 2
    if at + 8 * ndim > len(d):
        _truncated(at, 8 * ndim)
    shape = _SHAPE[ndim].unpack_from(d, at)
    at += 8 * ndim
    if any(s < 0 for s in shape):
        raise MessageError(f"negative array shape {shape}")
    count = math.prod(shape)
    n = count * wire.itemsize
    if at + n > len(d):
        _truncated(at, n)
    try:
        if count == 0:
            return np.empty(0, native).reshape(shape), at
        a = np.frombuffer(d, dtype=wire, count=count, offset=at).astype(native)   # a writable copy
        return (a if ndim == 1 else a.reshape(shape)), at + n
    except ValueError as e:
        raise MessageError(f"array of shape {shape}: {e}") from None


def _dec_list(d, at, depth):
    if at + 4 > len(d):
        _truncated(at, 4)
    n = _U32.unpack_from(d, at)[0]
    at += 4
    if depth >= _MAX_DEPTH and n:
        raise MessageError("message nested too deeply")
    depth += 1
    out = []
    for _ in range(n):
        if at >= len(d):
            _truncated(at, 1)
        f = _DEC.get(d[at])
        if f is None:
            _unknown_tag(d, at)
        v, at = f(d, at + 1, depth)
        out.append(v)
    return out, at


def _dec_dict(d, at, depth):
    if at + 4 > len(d):
        _truncated(at, 4)
    n = _U32.unpack_from(d, at)[0]
    at += 4
    if depth >= _MAX_DEPTH and n:
        raise MessageError("message nested too deeply")
    depth += 1
    out = {}
    size = len(d)
    unpack = _U32.unpack_from
    for _ in range(n):
        if at + 4 > size:
            _truncated(at, 4)
        m = unpack(d, at)[0]
        at += 4
        end = at + m
        if end >= size:                               # the key and at least the value's tag
            _truncated(at, m + 1)
        try:
            k = d[at:end].decode()
        except UnicodeDecodeError:
            raise MessageError("dict key is not UTF-8") from None
        at = end
        f = _DEC.get(d[at])
        if f is None:
            _unknown_tag(d, at)
        out[k], at = f(d, at + 1, depth)
    return out, at


def _unknown_tag(d, at):
    raise MessageError(f"unknown type tag {d[at:at + 1]!r} at byte {at}")


_DEC = {ord("N"): _dec_none, ord("T"): _dec_true, ord("F"): _dec_false, ord("i"): _dec_int,
        ord("I"): _dec_bigint, ord("f"): _dec_float, ord("s"): _dec_str, ord("b"): _dec_bytes,
        ord("a"): _dec_array, ord("l"): _dec_list, ord("d"): _dec_dict}


def decode_message(data: bytes):
    """Inverse of :func:`encode_message`; :class:`MessageError` if the bytes are not one message."""
    d = data if type(data) is bytes else bytes(data)
    if d[:3] != _MAGIC:
        raise MessageError("not a qkdlink-distill message (bad magic or version)")
    if len(d) < 4:
        _truncated(3, 1)
    f = _DEC.get(d[3])
    if f is None:
        _unknown_tag(d, 3)
    v, at = f(d, 4, 0)
    if at != len(d):
        raise MessageError(f"{len(d) - at} trailing bytes after the message")
    return v


def _pack_bits(bits: np.ndarray) -> bytes:
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()


def _unpack_bits(data, count: int, what: str) -> np.ndarray:
    if not isinstance(data, (bytes, bytearray)) or len(data) != (count + 7) // 8:
        raise MessageError(f"{what}: expected {(count + 7) // 8} bytes for {count} bits")
    return np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8), count=count)


# ----------------------------------------------------------------------------------------------
# The channel.

Adversary = Callable[[str, int, bytes], list]


class Channel:
    """In-process classical channel: one FIFO of byte frames per direction.

    ``adversary(direction, index, frame) -> [frames]`` (optional) sees every frame sent (``index``
    counts frames per direction from 0) and returns what is delivered instead: ``[frame]`` to pass
    it on, a modified frame, ``[]`` to drop or withhold it, several frames to inject or reorder.
    Counts messages and bytes per direction.
    """

    def __init__(self, adversary: Adversary | None = None):
        self.adversary = adversary
        self._queues = {ALICE_TO_BOB: deque(), BOB_TO_ALICE: deque()}
        self.frames_sent = {ALICE_TO_BOB: 0, BOB_TO_ALICE: 0}
        self.bytes_sent = {ALICE_TO_BOB: 0, BOB_TO_ALICE: 0}

    def send(self, direction: str, frame: bytes) -> None:
        i = self.frames_sent[direction]
        self.frames_sent[direction] += 1
        self.bytes_sent[direction] += len(frame)
        out = [frame] if self.adversary is None else self.adversary(direction, i, bytes(frame))
        for f in out:
            self._queues[direction].append(bytes(f))

    def recv(self, direction: str) -> bytes:
        q = self._queues[direction]
        if not q:
            raise DistillAbort("protocol", f"no {direction} message waiting (lost or withheld on the channel)")
        return q.popleft()

    def pending(self, direction: str) -> int:
        return len(self._queues[direction])


# ----------------------------------------------------------------------------------------------
# Options, ledger, result.

AUTH_MODES = ("transcript", "per-message")
# Frame kinds on the classical channel (first byte of every frame).
_PLAIN, _SEALED, _TAG = 0, 1, 2
# Messages that are always sealed on their own: they release the key, so every plain message
# before them must be authenticated first (transcript mode).
_SEALED_KINDS = frozenset(("confirm", "done"))


@dataclass(frozen=True)
class DistillOptions:
    """Knobs that are not security parameters (those are in ``LinkConfig.postprocessing``).

    ``sample_fraction`` of the key-basis bits (at least ``sample_min_bits``, at most
    ``sample_max_bits`` and half the key bits) is disclosed for the QBER estimate; ``cascade_variant``
    and ``ldpc`` configure the reconciliation; ``qber_eps`` is the failure probability of the
    sample's QBER bound (default: ``eps_sec``; it steers decisions only, see ``estimation``).

    ``cascade_frame_bits``: Cascade reconciles the block as frames of about this many bits, all
    in one session (round trips shared by the frames, the native engine's two threads busy);
    see :func:`cascade_frames`.

    ``authentication``: ``"transcript"`` (default) sends the block's messages with sequence numbers
    but without tags and authenticates each direction's whole transcript with one Wegman-Carter
    tag before the messages that release the key (``confirm``, ``done``) — nothing is output before
    every message has been authenticated, and a block costs a few tags instead of one per round
    trip (Cascade needs hundreds); ``"per-message"`` tags every message as it is sent.
    """
    sample_fraction: float = 0.01
    sample_min_bits: int = 256
    sample_max_bits: int = 50_000
    cascade_variant: str = "optimized"
    ldpc: LdpcParams = field(default_factory=LdpcParams)
    qber_eps: float | None = None
    max_payload_bytes: int = 16 << 20
    authentication: str = "transcript"
    cascade_frame_bits: int = 1 << 17

    def __post_init__(self):
        if not 1024 <= self.cascade_frame_bits <= 1 << 26:
            raise DistillInputError(f"DistillOptions.cascade_frame_bits = {self.cascade_frame_bits!r}: must be in "
                                    "[1024, 2^26]")
        if self.authentication not in AUTH_MODES:
            raise DistillInputError(f"DistillOptions.authentication = {self.authentication!r}: must be one of "
                                    f"{', '.join(AUTH_MODES)}")
        if not 0.0 < self.sample_fraction < 0.5:
            raise DistillInputError(f"DistillOptions.sample_fraction = {self.sample_fraction!r}: must be in (0, 0.5)")
        if not 1 <= self.sample_min_bits <= self.sample_max_bits:
            raise DistillInputError("DistillOptions: need 1 <= sample_min_bits <= sample_max_bits")

    def sample_bits(self, n_key_bits: int) -> int:
        k = max(self.sample_min_bits, int(round(self.sample_fraction * n_key_bits)))
        return max(1, min(k, self.sample_max_bits, n_key_bits // 2))


@dataclass
class BlockLedger:
    """Every number of one block (public values only: counts, lengths, probabilities, times)."""
    block: int
    pulses: int
    first_slot: int
    sifted_bits: int
    key_basis_bits: int
    test_basis_bits: int
    test_errors: int
    qber_test: float
    sampled_bits: int
    sample_errors: int
    qber_key_sample: float
    qber_key_upper: float
    method: str = ""
    reconciled_bits: int = 0           # key bits that went into reconciliation (Z minus sample)
    dropped_bits: int = 0              # LDPC frames that never decoded, dropped at both ends
    disclosed_ec_bits: int = 0
    ec_rounds: int = 0
    corrected_bits: int = 0            # errors Bob corrected (the actual key-basis errors)
    f_measured: float = 0.0            # disclosed / (reconciled h(corrected / reconciled))
    verification_bits: int = 0
    verified: bool = False
    s_key_0: float = 0.0
    s_key_1: float = 0.0
    s_test_1: float = 0.0
    phase_error: float = 0.0
    s_key_1_times_1_minus_h_phase: float = 0.0
    security_bits: float = 0.0
    key_length_unrounded: float = 0.0
    pa_input_bits: int = 0
    pa_output_bits: int = 0            # the finite-key length
    auth_messages: int = 0
    auth_key_bits_consumed: int = 0
    auth_forgery_probability: float = 0.0
    auth_replenish_bits: int = 0       # taken from the new key back into the pad streams
    final_key_bits: int = 0
    eps_sec: float = 0.0
    eps_cor: float = 0.0
    eps_total: float = 0.0
    timings_s: dict = field(default_factory=dict)

    def public_digest(self) -> str:
        """SHA-256 of every protocol number (not the timings): both ends must compute the same."""
        d = {k: v for k, v in asdict(self).items() if k != "timings_s"}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=float).encode()).hexdigest()


_ADDITIVE = ("pulses", "sifted_bits", "key_basis_bits", "test_basis_bits", "test_errors", "sampled_bits",
             "sample_errors", "reconciled_bits", "dropped_bits", "disclosed_ec_bits", "ec_rounds",
             "corrected_bits", "verification_bits", "s_key_0", "s_key_1", "s_test_1",
             "s_key_1_times_1_minus_h_phase", "security_bits", "pa_input_bits", "pa_output_bits", "auth_messages",
             "auth_key_bits_consumed", "auth_forgery_probability", "auth_replenish_bits", "final_key_bits")


@dataclass
class Ledger:
    """Totals over the blocks of one run (:class:`BlockLedger` each in ``blocks``).

    ``final_key_bits = sum(pa_output_bits - auth_replenish_bits)``; ``keys_identical`` compares
    SHA-256 digests of both ends' final keys (filled by :func:`distill`, which holds both ends).
    """
    blocks: tuple
    method: str
    eps_sec: float
    eps_cor: float
    eps_total: float
    f_measured: float
    qber_test: float
    qber_key: float
    totals: dict
    timings_s: dict
    keys_identical: bool | None = None
    key_sha256_prefix: str | None = None

    @classmethod
    def from_blocks(cls, blocks) -> "Ledger":
        blocks = tuple(blocks)
        tot = {k: sum(getattr(b, k) for b in blocks) for k in _ADDITIVE}
        rec = tot["reconciled_bits"] - tot["dropped_bits"]
        corr = tot["corrected_bits"]
        h = binary_entropy(corr / rec) if rec else 0.0
        f = tot["disclosed_ec_bits"] / (rec * h) if rec and h > 0 else math.inf
        timings: dict = {}
        for b in blocks:
            for k, v in b.timings_s.items():
                timings[k] = timings.get(k, 0.0) + v
        methods = sorted({b.method for b in blocks})
        return cls(blocks=blocks, method="+".join(methods), eps_sec=sum(b.eps_sec for b in blocks),
                   eps_cor=sum(b.eps_cor for b in blocks), eps_total=sum(b.eps_total for b in blocks),
                   f_measured=f, qber_test=tot["test_errors"] / tot["test_basis_bits"] if tot["test_basis_bits"] else 0.0,
                   qber_key=corr / rec if rec else 0.0, totals=tot, timings_s=timings)

    @property
    def final_key_bits(self) -> int:
        return int(self.totals["final_key_bits"])

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("method", "eps_sec", "eps_cor", "eps_total", "f_measured", "qber_test",
                                           "qber_key", "keys_identical", "key_sha256_prefix")}
        d["f_measured"] = None if not math.isfinite(self.f_measured) else self.f_measured
        d["totals"] = dict(self.totals)
        d["timings_s"] = dict(self.timings_s)
        d["blocks"] = [asdict(b) for b in self.blocks]
        return d


@dataclass
class DistillResult:
    """``ledger`` and both ends' final keys (``np.uint8`` bit arrays, identical when the run succeeded)."""
    ledger: Ledger
    alice_key: np.ndarray = field(repr=False)
    bob_key: np.ndarray = field(repr=False)


def key_fingerprint(bits: np.ndarray) -> str:
    """SHA-256 of the packed key bits (hex): compare keys by this, never print keys."""
    b = np.asarray(bits, dtype=np.uint8)
    return hashlib.sha256(len(b).to_bytes(8, "big") + np.packbits(b).tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Pure helpers.

def _check_rows(name: str, rows) -> np.ndarray:
    try:
        a = np.asarray(rows)
    except Exception as e:  # noqa: BLE001 - anything not array-like
        raise DistillInputError(f"{name}: not an array of rows ({e})") from None
    if a.ndim != 2 or a.shape[1] != 2:
        raise DistillInputError(f"{name}: must be rows (slot, key_byte) of shape (n, 2), got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise DistillInputError(f"{name}: rows must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "i" and a.size and a.min() < 0:
        raise DistillInputError(f"{name}: negative slot or key byte")
    a = a.astype(np.uint64, copy=False)          # read only from here on (the ends never write rows)
    if a.shape[0] == 0:
        raise DistillInputError(f"{name}: no sifted rows (empty block): nothing to distill")
    kb = a[:, 1]
    if kb.max() >= 12:                           # above 0x0F, or intensity (kb >> 2) = 3
        i = int(np.flatnonzero(kb >= 12)[0])
        raise DistillInputError(f"{name}[{i}]: key byte {int(kb[i])} is not bit | basis << 1 | intensity << 2 "
                                "with intensity 0..2")
    if a.shape[0] > 1 and not (a[1:, 0] > a[:-1, 0]).all():
        i = int(np.flatnonzero(a[1:, 0] <= a[:-1, 0])[0]) + 1
        raise DistillInputError(f"{name}[{i}]: slots must be strictly increasing (slot {int(a[i, 0])} after "
                                f"{int(a[i - 1, 0])})")
    return a


def split_blocks(n_rows: int, block_bits: int) -> list[tuple[int, int]]:
    """Row ranges of the privacy-amplification blocks: ``max(1, n_rows // block_bits)`` contiguous
    blocks of nearly equal size (each at least ``block_bits`` sifted rows unless there is only one)."""
    nb = max(1, n_rows // max(1, int(block_bits)))
    edges = [n_rows * i // nb for i in range(nb + 1)]
    return [(edges[i], edges[i + 1]) for i in range(nb)]


def cascade_frames(bits: np.ndarray, frame_bits: int) -> np.ndarray:
    """The key as ``(F, n)`` frames for Cascade: ``F = ceil(len / frame_bits)`` frames of equal
    length ``n = ceil(len / F)``, the last one padded with zeros (public, the same at both ends:
    they carry no secret and the parities over them are counted as disclosed anyway)."""
    size = int(bits.size)
    frames = max(1, -(-size // int(frame_bits)))
    n = -(-size // frames)
    out = np.zeros(frames * n, np.uint8)
    out[:size] = bits
    return out.reshape(frames, n)


def choose_method(configured: str, qber: float, key_bits: int, tag_bits: int, *,
                  per_message_tags: bool = True) -> str:
    """The reconciliation method: ``cascade`` / ``ldpc`` as configured, or for ``auto`` the one with
    the smaller expected cost in key bits at QBER ``qber``::

        cascade: 1.05 n h(q) + 2 x 1000 x tag_bits      (f and round trips measured, see the constants)
        ldpc:    f_typ(q) n h(q) + 30 x tag_bits         (f_typ: ldpc_reconcile.typical_efficiency)

    With per-message tags Cascade's round trips each cost a one-time-padded tag; LDPC needs a
    dozen messages but f is 0.1-0.25 higher. With transcript authentication
    (``per_message_tags=False``) both cost the same few tags and Cascade's lower f wins.
    """
    if not per_message_tags:
        tag_bits = 0
    if configured in ("cascade", "ldpc"):
        return configured
    q = min(max(float(qber), 0.0025), 0.5)
    nh = key_bits * binary_entropy(q)
    cascade = CASCADE_F_ESTIMATE * nh + 2 * CASCADE_ROUNDS_ESTIMATE * tag_bits
    ldpc = typical_efficiency(q) * nh + LDPC_MESSAGES_ESTIMATE * tag_bits
    return "cascade" if cascade < ldpc else "ldpc"


def _sifted_digest(rows: np.ndarray) -> str:
    """SHA-256 of the public part of the sifted rows: slot and key byte without the bit."""
    pub = np.empty((rows.shape[0], 2), ">u8")
    pub[:, 0] = rows[:, 0]
    pub[:, 1] = rows[:, 1] & np.uint64(0x0E)
    return hashlib.sha256(pub).hexdigest()


def _params_digest(cfg, options: DistillOptions, block_bits: int) -> str:
    s, pp = cfg.source, cfg.postprocessing
    d = {"mu": [s.mu_signal, s.mu_decoy, s.mu_vacuum], "p": [s.p_signal, s.p_decoy, s.p_vacuum],
         "eps_sec": pp.eps_sec, "eps_cor": pp.eps_cor, "qber_abort": pp.qber_abort, "block_bits": block_bits,
         "reconciliation": pp.reconciliation, "sample": [options.sample_fraction, options.sample_min_bits,
                                                         options.sample_max_bits], "qber_eps": options.qber_eps}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def simulation_preshared_key(seed: int, n_bytes: int = 1 << 15) -> bytes:
    """A pre-shared authentication key derived from ``seed`` (SHAKE-256). FOR SIMULATION ONLY: anyone
    who knows the seed knows the key; a real link needs a key shared in person."""
    return hashlib.shake_256(f"qkdlink-simulation-psk/{int(seed)}".encode()).digest(int(n_bytes))


class _Random:
    """Random bytes: a seeded numpy generator (simulation, reproducible) or the OS CSPRNG."""

    def __init__(self, rng: np.random.Generator | None):
        self.rng = rng

    def bytes(self, n: int) -> bytes:
        return self.rng.bytes(n) if self.rng is not None else secrets.token_bytes(n)

    def u63(self) -> int:
        return int.from_bytes(self.bytes(8), "big") >> 1


# ----------------------------------------------------------------------------------------------
# The two ends.

class _End:
    role = ""
    _out_dir = ""
    _in_dir = ""

    def __init__(self, rows, *, pool: KeyPool, cfg, n_pulses: int, block: int, session_id: bytes,
                 channel: Channel, options: DistillOptions, rng: np.random.Generator | None,
                 first_slot: int, block_bits: int):
        self.rows = rows
        self.pool = pool
        self.cfg = cfg
        self.pp = cfg.postprocessing
        self.n_pulses = int(n_pulses)
        self.block = block
        self.channel = channel
        self.options = options
        self.rand = _Random(rng)
        self.first_slot = int(first_slot)
        self.block_bits = int(block_bits)
        self.auth = Authenticator(self.role, pool, session_id, max_payload_bytes=options.max_payload_bytes)
        self.deferred = options.authentication == "transcript"
        self._sent_tr = bytearray()          # plain frames sent since the last transcript tag
        self._recv_tr = bytearray()          # plain frames received since the last transcript tag
        self._out_seq = 0
        self._in_seq = 0
        self.timings = {"estimate_s": 0.0, "reconcile_s": 0.0, "verify_s": 0.0, "pa_s": 0.0, "auth_s": 0.0,
                        "codec_s": 0.0}
        self.key_bits = None                      # working key (wiped on abort)
        self.final = None
        code = (rows[:, 1] & np.uint64(0x0F)).astype(np.uint8)   # bit | basis << 1 | intensity << 2
        self.bits = code & np.uint8(1)
        public = code >> np.uint8(1)                               # basis | intensity << 1
        code.fill(0)
        del code
        is_x = (public & np.uint8(1)).view(np.bool_)               # bool masks: nonzero is fastest on them
        self.z_idx = np.flatnonzero(~is_x)
        self.x_idx = np.flatnonzero(is_x)
        self.intensity = public >> np.uint8(1)
        # sifted rows per (intensity, basis): index basis + 2 intensity
        self._class_counts = np.bincount(public, minlength=8)[:6].reshape(3, 2)
        self.ledger = None
        self.estimate = None

    # -- stage timing: wall time minus the framing (auth, codec) counted separately
    def _clock(self) -> tuple[float, float]:
        return time.perf_counter(), self.timings["auth_s"] + self.timings["codec_s"]

    def _lap(self, stage: str, t0: tuple[float, float], other_s: float = 0.0) -> None:
        framing = self.timings["auth_s"] + self.timings["codec_s"] - t0[1]
        self.timings[stage] += time.perf_counter() - t0[0] - framing - other_s

    # -- framing
    def _seal(self, payload: bytes, kind: str) -> bytes:
        try:
            return self.auth.seal(payload)
        except KeyExhausted as e:
            raise DistillAbort("auth-key-exhausted", f"{self.role}: {e}", block=self.block, stage=kind) from e

    def flush_transcript(self, kind: str) -> None:
        """Send one tag over every plain frame sent since the last tag (header + tag, no payload:
        the receiver puts its own copy of the transcript back in before checking)."""
        if not self._sent_tr:
            return
        t0 = time.perf_counter()
        frame = self._seal(bytes(self._sent_tr), kind)
        self._sent_tr.clear()
        self.timings["auth_s"] += time.perf_counter() - t0
        self.channel.send(self._out_dir, bytes((_TAG,)) + frame[:HEADER_BYTES] + frame[len(frame) - self.auth.tag_bits // 8:])

    def send(self, kind: str, body: dict) -> None:
        t0 = time.perf_counter()
        payload = encode_message({"type": kind, "block": self.block, **body})
        t1 = time.perf_counter()
        if self.deferred and kind not in _SEALED_KINDS:
            frame = bytes((_PLAIN,)) + self.auth.session_id + self._out_seq.to_bytes(8, "big") + payload
            self._out_seq += 1
            if len(self._sent_tr) + len(frame) > self.options.max_payload_bytes - 64:
                self.flush_transcript(kind)
            self._sent_tr += frame
        else:
            self.flush_transcript(kind)
            frame = bytes((_SEALED,)) + self._seal(payload, kind)
        t2 = time.perf_counter()
        self.timings["codec_s"] += t1 - t0
        self.timings["auth_s"] += t2 - t1
        self.channel.send(self._out_dir, frame)

    def _open(self, frame: bytes, kind: str) -> bytes:
        try:
            return self.auth.open(frame)
        except AuthenticationError as e:
            raise DistillAbort("authentication", f"{self.role} rejected a frame: {e}", block=self.block,
                               stage=kind) from e
        except KeyExhausted as e:
            raise DistillAbort("auth-key-exhausted", f"{self.role}: {e}", block=self.block, stage=kind) from e

    def _next_payload(self, kind: str) -> bytes:
        """The next message's payload; checks transcript tags on the way (transcript mode)."""
        while True:
            frame = self.channel.recv(self._in_dir)
            t0 = time.perf_counter()
            ftype = frame[0] if frame else -1
            if ftype == _TAG and self.deferred:
                tag_bytes = self.auth.tag_bits // 8
                if len(frame) != 1 + HEADER_BYTES + tag_bytes:
                    raise DistillAbort("authentication", f"{self.role}: malformed transcript tag", block=self.block,
                                       stage=kind)
                self._open(frame[1:1 + HEADER_BYTES] + bytes(self._recv_tr) + frame[1 + HEADER_BYTES:], kind)
                self._recv_tr.clear()
                self.timings["auth_s"] += time.perf_counter() - t0
                continue
            if ftype == _PLAIN and self.deferred:
                head = 1 + len(self.auth.session_id)
                if frame[1:head] != self.auth.session_id:
                    raise DistillAbort("authentication", f"{self.role}: wrong-session: frame for session "
                                       f"{bytes(frame[1:head]).hex()}, this session is {self.auth.session_id.hex()}",
                                       block=self.block, stage=kind)
                seq = int.from_bytes(frame[head:head + 8], "big") if len(frame) >= head + 8 else -1
                if seq != self._in_seq:
                    what = "replay" if 0 <= seq < self._in_seq else "out-of-order"
                    raise DistillAbort("authentication", f"{self.role}: {what} message (sequence {seq}, expected "
                                       f"{self._in_seq})", block=self.block, stage=kind)
                self._in_seq += 1
                self._recv_tr += frame
                return frame[head + 8:]
            if ftype == _SEALED:
                if self._recv_tr:
                    raise DistillAbort("authentication", f"{self.role}: a sealed {kind!r} message arrived before "
                                       "the peer's transcript was authenticated", block=self.block, stage=kind)
                payload = self._open(frame[1:], kind)
                self.timings["auth_s"] += time.perf_counter() - t0
                return payload
            raise DistillAbort("authentication", f"{self.role}: frame of unknown kind {ftype} for this session "
                               f"({'transcript' if self.deferred else 'per-message'} authentication)",
                               block=self.block, stage=kind)

    def recv(self, kind: str) -> dict:
        payload = self._next_payload(kind)
        t1 = time.perf_counter()
        try:
            msg = decode_message(payload)
        except MessageError as e:
            raise DistillAbort("protocol", f"{self.role}: undecodable {kind} message: {e}", block=self.block,
                               stage=kind) from e
        self.timings["codec_s"] += time.perf_counter() - t1
        if not isinstance(msg, dict) or msg.get("block") != self.block:
            raise DistillAbort("protocol", f"{self.role}: message for another block", block=self.block, stage=kind)
        if msg.get("type") == "abort":
            raise DistillAbort(str(msg.get("reason", "peer")), f"peer aborted: {msg.get('detail', '')}",
                               block=self.block, stage=kind)
        if msg.get("type") != kind:
            raise DistillAbort("protocol", f"{self.role} expected a {kind!r} message, got {msg.get('type')!r}",
                               block=self.block, stage=kind)
        return msg

    def fail(self, reason: str, detail: str, stage: str, notify: bool = True):
        """Tell the peer (authenticated) and raise."""
        if notify and self.auth.state == "open":
            try:
                self.send("abort", {"reason": reason, "detail": detail})
            except DistillAbort:
                pass
        raise DistillAbort(reason, detail, block=self.block, stage=stage)

    # -- shared computations
    def counts(self, m_test) -> est_mod.ObservedCounts:
        n_key, n_test = self._class_counts[:, 0], self._class_counts[:, 1]
        return est_mod.ObservedCounts(n_pulses=self.n_pulses, n_key=tuple(int(x) for x in n_key),
                                      n_test=tuple(int(x) for x in n_test), m_test=tuple(int(x) for x in m_test))

    def run_estimate(self, m_test, sample_errors: int, sample_bits: int) -> est_mod.Estimate:
        s = self.cfg.source
        return est_mod.estimate(self.counts(m_test), mu=(s.mu_signal, s.mu_decoy, s.mu_vacuum),
                                p=(s.p_signal, s.p_decoy, s.p_vacuum), eps_sec=self.pp.eps_sec,
                                qber_sample=(sample_errors, sample_bits), qber_abort=self.pp.qber_abort,
                                qber_eps=self.options.qber_eps)

    def key_length(self, leaked: int, sampled: int, t: int) -> est_mod.KeyLength:
        return est_mod.secret_key_length(self.estimate, leaked_ec_bits=leaked, sampled_bits=sampled,
                                         verification_bits=t, eps_sec=self.pp.eps_sec, eps_cor=self.pp.eps_cor)

    def new_ledger(self, m_test, sample_bits: int, sample_errors: int) -> BlockLedger:
        e = self.estimate
        return BlockLedger(
            block=self.block, pulses=self.n_pulses, first_slot=self.first_slot, sifted_bits=int(self.rows.shape[0]),
            key_basis_bits=int(self.z_idx.size), test_basis_bits=int(self.x_idx.size), test_errors=int(sum(m_test)),
            qber_test=float(e.qber_test), sampled_bits=int(sample_bits), sample_errors=int(sample_errors),
            qber_key_sample=float(e.qber_key), qber_key_upper=float(e.qber_key_upper),
            s_key_0=float(e.s_key_0), s_key_1=float(e.s_key_1), s_test_1=float(e.s_test_1),
            phase_error=float(e.phase_error), eps_sec=self.pp.eps_sec, eps_cor=self.pp.eps_cor)

    def finish_ledger(self, kl: est_mod.KeyLength) -> None:
        L = self.ledger
        L.s_key_1_times_1_minus_h_phase = float(kl.s_key_1_times_1_minus_h_phase)
        L.security_bits = float(kl.security_bits)
        L.key_length_unrounded = float(kl.unrounded_bits)
        L.pa_output_bits = int(kl.length_bits)

    def settle(self, amplified: np.ndarray) -> np.ndarray:
        """After the last message: account for authentication, refill the pads, keep the rest."""
        led = self.auth.ledger()
        self.auth.close()
        consumed = {led["send"]["stream"]: led["send"]["key_bits_consumed"],
                    led["receive"]["stream"]: led["receive"]["key_bits_consumed"]}
        c_ab, c_ba = consumed[ALICE_TO_BOB], consumed[BOB_TO_ALICE]
        L = self.ledger
        L.auth_messages = int(led["messages"])
        L.auth_key_bits_consumed = int(c_ab + c_ba)
        L.auth_forgery_probability = float(led["forgery_probability"])
        L.eps_total = L.eps_sec + L.eps_cor + L.auth_forgery_probability
        R = c_ab + c_ba
        if amplified.size <= R:
            raise DistillAbort("key-length", f"the block's {amplified.size} secret bits do not pay for the {R} "
                               "authentication key bits its messages used", block=self.block, stage="settle")
        self.pool.replenish(amplified[:c_ab], stream=ALICE_TO_BOB)
        self.pool.replenish(amplified[c_ab:R], stream=BOB_TO_ALICE)
        L.auth_replenish_bits = int(R)
        out = amplified[R:].copy()
        amplified[:] = 0
        L.final_key_bits = int(out.size)
        L.timings_s = dict(self.timings)
        return out

    def wipe(self) -> None:
        for name in ("key_bits", "final"):
            v = getattr(self, name)
            if isinstance(v, np.ndarray) and v.flags.writeable:
                v[:] = 0
            setattr(self, name, None)
        self.bits[:] = 0
        if self.auth.state == "open":
            self.auth.close()


class AliceEnd(_End):
    """Alice's side of one block: her sifted rows, her KeyPool; answers Bob's reconciliation."""
    role = "alice"
    _out_dir = ALICE_TO_BOB
    _in_dir = BOB_TO_ALICE

    def open_block(self) -> None:
        t0 = self._clock()
        self.send("hello", {"protocol": PROTOCOL, "n_sifted": int(self.rows.shape[0]), "n_pulses": self.n_pulses,
                            "first_slot": self.first_slot, "sifted_sha256": _sifted_digest(self.rows),
                            "params_sha256": _params_digest(self.cfg, self.options, self.block_bits)})
        self.send("test_bits", {"n": int(self.x_idx.size), "bits": _pack_bits(self.bits[self.x_idx])})
        n_key = int(self.z_idx.size)
        k = self.options.sample_bits(n_key)
        seed = self.rand.u63()
        self.sample = est_mod.sample_for_qber(n_key, k, seed)
        self.send("qber_sample", {"n_key": n_key, "seed": seed, "k": k,
                                  "bits": _pack_bits(self.bits[self.z_idx[self.sample]])})
        self._lap("estimate_s", t0)

    def on_estimate(self) -> None:
        t0 = self._clock()
        msg = self.recv("estimate")
        m_test, e_k = msg["m_test"], int(msg["sample_errors"])
        try:
            self.estimate = self.run_estimate(m_test, e_k, int(self.sample.size))
        except (est_mod.EstimationAbort, ValueError) as e:
            self.fail("estimation", f"Alice's estimate disagrees with Bob's (he found a key, she: {e})", "estimate")
        self.method = msg["method"]
        if self.method not in ("cascade", "ldpc") or (self.pp.reconciliation != "auto"
                                                      and self.method != self.pp.reconciliation):
            self.fail("protocol", f"Bob chose reconciliation {self.method!r}, configured "
                      f"{self.pp.reconciliation!r}", "estimate")
        self.ledger = self.new_ledger(m_test, int(self.sample.size), e_k)
        self.ledger.method = self.method
        keep = np.ones(self.z_idx.size, bool)
        keep[self.sample] = False
        self.key_bits = self.bits[self.z_idx[keep]].copy()
        if self.method == "cascade":
            self.rec = CascadeAlice(cascade_frames(self.key_bits, self.options.cascade_frame_bits),
                                    int(msg["ec_seed"]))
        else:
            self.rec = LdpcAlice(self.key_bits, rng=self.rand.rng)
        self.rec_bits_sent = 0
        self._lap("estimate_s", t0)

    def serve_reconcile(self) -> None:
        """Answer one reconciliation query."""
        t0 = self._clock()
        q = self.recv("rec")["q"]
        try:
            a = self.rec.answer(q) if self.method == "cascade" else self.rec.handle(q)
        except (ValueError, KeyError, TypeError, LdpcProtocolError) as e:
            self.fail("reconciliation", f"Alice cannot answer a {self.method} query: {e}", "rec")
        if self.method == "ldpc":
            self.rec_bits_sent += 8 * sum(len(v) for v in a.values() if isinstance(v, (bytes, bytearray)))
            self.rec_bits_sent += 64 * len(a.get("mismatch", []))
        self.send("rec", {"a": a})
        self._lap("reconcile_s", t0)

    def on_rec_done(self) -> None:
        t0 = self._clock()
        msg = self.recv("rec_done")
        L = self.ledger
        leaked = int(msg["leaked_bits"])
        if self.method == "cascade":
            if leaked != self.rec.parities_disclosed:
                self.fail("reconciliation", f"Bob counts {leaked} disclosed parities, Alice answered "
                          f"{self.rec.parities_disclosed}", "rec_done")
        else:
            try:
                self.key_bits = self.rec.result()
            except LdpcProtocolError as e:
                self.fail("reconciliation", str(e), "rec_done")
            if not 0 < leaked <= self.rec_bits_sent + int(msg["check_bits"]):
                self.fail("reconciliation", f"Bob counts {leaked} disclosed bits, more than the "
                          f"{self.rec_bits_sent} Alice sent plus {msg['check_bits']} frame-check bits", "rec_done")
        L.disclosed_ec_bits = leaked
        L.reconciled_bits = int(msg["reconciled_bits"])
        L.dropped_bits = int(msg["dropped_bits"])
        L.ec_rounds = int(msg["rounds"])
        L.corrected_bits = int(msg["corrected_bits"])
        L.f_measured = float(msg["f_measured"])
        if self.key_bits.size != L.reconciled_bits - L.dropped_bits:
            self.fail("reconciliation", f"Alice keeps {self.key_bits.size} bits, Bob "
                      f"{L.reconciled_bits - L.dropped_bits}", "rec_done")
        self.rec = None
        self._lap("reconcile_s", t0)

    def send_verify(self) -> None:
        t0 = self._clock()
        n = int(self.key_bits.size)
        t = tag_bits_for(self.pp.eps_cor, n)
        seed = bits_from_bytes(self.rand.bytes(-(-(n + t - 1) // 8)), n + t - 1)
        tag = verification_tag(self.key_bits, seed)
        self.ledger.verification_bits = t
        self.send("verify", {"t": t, "n": n, "seed": _pack_bits(seed), "tag": tag})
        self._lap("verify_s", t0)

    def on_verify_result(self) -> None:
        msg = self.recv("verify_ok")
        if msg.get("equal") is not True:
            raise DistillAbort("verification", "the reconciled keys differ (verification hash mismatch); the "
                               "block is discarded", block=self.block, stage="verify")
        self.ledger.verified = True

    def send_pa(self) -> None:
        t0 = self._clock()
        L = self.ledger
        try:
            kl = self.key_length(L.disclosed_ec_bits, L.sampled_bits + L.dropped_bits, L.verification_bits)
        except est_mod.EstimationAbort as e:
            self.fail("key-length", str(e), "pa")
        self.finish_ledger(kl)
        n, m = int(self.key_bits.size), int(kl.length_bits)
        L.pa_input_bits = n
        amp = PrivacyAmplifier(n, m)
        res = amp.amplify(self.key_bits, self.rand.bytes(-(-amp.seed_bits // 8)))
        self.final = res.key
        self.send("pa", {"m": m, "n": n, "seed": _pack_bits(res.seed)})
        self._lap("pa_s", t0)

    def on_confirm(self) -> None:
        msg = self.recv("confirm")
        mine = self.ledger.public_digest()
        if not hmac.compare_digest(str(msg.get("ledger_sha256")), mine):
            self.fail("protocol", "Alice's and Bob's ledgers differ; no key is output", "confirm")
        self.send("done", {"ledger_sha256": mine})

    def output(self) -> np.ndarray:
        out = self.settle(self.final)
        self.final = None
        self.key_bits = None
        return out


class BobEnd(_End):
    """Bob's side of one block: his sifted rows, his KeyPool; drives the reconciliation."""
    role = "bob"
    _out_dir = BOB_TO_ALICE
    _in_dir = ALICE_TO_BOB

    def on_opening(self) -> None:
        t0 = self._clock()
        h = self.recv("hello")
        mine = {"protocol": PROTOCOL, "n_sifted": int(self.rows.shape[0]), "n_pulses": self.n_pulses,
                "first_slot": self.first_slot, "sifted_sha256": _sifted_digest(self.rows),
                "params_sha256": _params_digest(self.cfg, self.options, self.block_bits)}
        what = {"protocol": "protocol version", "n_sifted": "number of sifted rows", "n_pulses": "pulses sent",
                "first_slot": "first slot", "sifted_sha256": "sifted slots, bases and intensities",
                "params_sha256": "security and protocol parameters"}
        for k, v in mine.items():
            if h.get(k) != v:
                shown = "" if k.endswith("sha256") else f" (Alice {h.get(k)!r}, Bob {v!r})"
                self.fail("session-mismatch", f"the ends disagree on the {what[k]}{shown}", "hello")
        tb = self.recv("test_bits")
        if int(tb["n"]) != self.x_idx.size:
            self.fail("session-mismatch", f"Alice sent {tb['n']} test bits, Bob has {self.x_idx.size}", "test_bits")
        try:
            a_x = _unpack_bits(tb["bits"], int(self.x_idx.size), "test_bits")
        except MessageError as e:
            self.fail("protocol", str(e), "test_bits")
        err = a_x != self.bits[self.x_idx]
        m_test = [int(x) for x in np.bincount(self.intensity[self.x_idx][err], minlength=3)[:3]]
        qs = self.recv("qber_sample")
        n_key = int(self.z_idx.size)
        k = int(qs["k"])
        if int(qs["n_key"]) != n_key or k != self.options.sample_bits(n_key):
            self.fail("session-mismatch", f"sample of {k} of {qs['n_key']} key bits; Bob has {n_key} key bits",
                      "qber_sample")
        sample = est_mod.sample_for_qber(n_key, k, int(qs["seed"]))
        try:
            a_s = _unpack_bits(qs["bits"], k, "qber_sample")
        except MessageError as e:
            self.fail("protocol", str(e), "qber_sample")
        e_k = int((a_s != self.bits[self.z_idx[sample]]).sum())
        self.m_test, self.sample_errors = m_test, e_k
        try:
            self.estimate = self.run_estimate(m_test, e_k, k)
        except est_mod.EstimationAbort as e:
            self._lap("estimate_s", t0)
            self.fail("estimation", f"no key from this block: {e}", "estimate")
        except ValueError as e:
            self.fail("session-mismatch", f"inconsistent counts: {e}", "estimate")
        keep = np.ones(n_key, bool)
        keep[sample] = False
        self.key_bits = self.bits[self.z_idx[keep]].copy()
        self.method = choose_method(self.pp.reconciliation, self.estimate.qber_key, int(self.key_bits.size),
                                    self.auth.tag_bits, per_message_tags=not self.deferred)
        self.ec_seed = self.rand.u63() & 0x7FFFFFFF
        self.ledger = self.new_ledger(m_test, k, e_k)
        self.ledger.method = self.method
        self.send("estimate", {"m_test": m_test, "sample_errors": e_k, "method": self.method,
                               "ec_seed": self.ec_seed})
        self._lap("estimate_s", t0)

    def reconcile(self, serve_peer: Callable[[], None]) -> None:
        """Run the reconciliation; ``serve_peer()`` lets Alice answer the query just sent."""
        t0 = self._clock()
        t_peer = [0.0]

        def ask(query):
            self.send("rec", {"q": query})
            t1 = time.perf_counter()
            serve_peer()
            t_peer[0] += time.perf_counter() - t1
            return self.recv("rec")["a"]

        q = min(max(float(self.estimate.qber_key), 1e-4), 0.49 if self.method == "cascade" else 0.1099)
        original = self.key_bits
        n = int(original.size)
        try:
            if self.method == "cascade":
                framed = cascade_frames(original, self.options.cascade_frame_bits)
                corrected, st = Cascade(self.options.cascade_variant, self.ec_seed).reconcile(framed, ask, q)
                corrected = corrected.reshape(-1)[:n]
                leaked, rounds, corr, dropped, check = int(st.leaked_bits), int(st.rounds), int(st.corrected_bits), 0, 0
            else:
                with LdpcBob(self.options.ldpc) as bob:
                    corrected, st = bob.reconcile(original, ask, q)
                plan = plan_frames(n, q, self.options.ldpc)
                keep = np.ones(plan.frames, bool)
                keep[np.asarray(st.failed_frames, dtype=np.int64)] = False
                kept_orig = original[np.repeat(keep, plan.frame_sizes)]
                leaked, rounds, dropped = int(st.leaked_bits), int(st.rounds), int(st.discarded_bits)
                corr, check = int((kept_orig != corrected).sum()), int(st.verify_bits)
        except DistillAbort:
            raise
        except (ValueError, KeyError, TypeError, LdpcProtocolError) as e:
            self.fail("reconciliation", f"{self.method}: {e}", "rec")
        kept = n - dropped
        h = binary_entropy(corr / kept) if kept else 0.0
        f = leaked / (kept * h) if kept and h > 0 else math.inf
        L = self.ledger
        L.disclosed_ec_bits, L.reconciled_bits, L.dropped_bits = leaked, n, dropped
        L.ec_rounds, L.corrected_bits, L.f_measured = rounds, corr, f
        self.key_bits = np.asarray(corrected, dtype=np.uint8)
        original[:] = 0
        self.send("rec_done", {"leaked_bits": leaked, "reconciled_bits": n, "dropped_bits": dropped,
                               "rounds": rounds, "corrected_bits": corr, "f_measured": f, "check_bits": check})
        self._lap("reconcile_s", t0, t_peer[0])

    def on_verify(self) -> None:
        t0 = self._clock()
        msg = self.recv("verify")
        n = int(self.key_bits.size)
        t = tag_bits_for(self.pp.eps_cor, n)
        if int(msg["t"]) != t or int(msg["n"]) != n:
            self.fail("session-mismatch", f"verification of {msg['n']} bits with a {msg['t']}-bit tag; Bob has "
                      f"{n} bits and expects {t}", "verify")
        try:
            seed = _unpack_bits(msg["seed"], n + t - 1, "verify seed")
        except MessageError as e:
            self.fail("protocol", str(e), "verify")
        equal = hmac.compare_digest(verification_tag(self.key_bits, seed), bytes(msg["tag"]))
        self.ledger.verification_bits = t
        self.send("verify_ok", {"equal": bool(equal)})
        self._lap("verify_s", t0)
        if not equal:
            raise DistillAbort("verification", "the reconciled keys differ (verification hash mismatch); the "
                               "block is discarded", block=self.block, stage="verify")
        self.ledger.verified = True

    def on_pa(self) -> None:
        t0 = self._clock()
        msg = self.recv("pa")
        L = self.ledger
        try:
            kl = self.key_length(L.disclosed_ec_bits, L.sampled_bits + L.dropped_bits, L.verification_bits)
        except est_mod.EstimationAbort as e:
            self.fail("key-length", str(e), "pa")
        self.finish_ledger(kl)
        n, m = int(self.key_bits.size), int(kl.length_bits)
        if int(msg["m"]) != m or int(msg["n"]) != n:
            self.fail("session-mismatch", f"Alice amplifies {msg['n']} bits to {msg['m']}, Bob computes {n} to {m}",
                      "pa")
        L.pa_input_bits = n
        amp = PrivacyAmplifier(n, m)
        try:
            seed = _unpack_bits(msg["seed"], amp.seed_bits, "pa seed")
        except MessageError as e:
            self.fail("protocol", str(e), "pa")
        self.final = amp.amplify_with_seed(self.key_bits, seed)
        self._lap("pa_s", t0)
        self.send("confirm", {"ledger_sha256": L.public_digest()})

    def on_done(self) -> None:
        msg = self.recv("done")
        if not hmac.compare_digest(str(msg.get("ledger_sha256")), self.ledger.public_digest()):
            raise DistillAbort("protocol", "Alice confirmed another ledger", block=self.block, stage="done")

    def output(self) -> np.ndarray:
        out = self.settle(self.final)
        self.final = None
        self.key_bits = None
        return out


def run_block(alice: AliceEnd, bob: BobEnd) -> tuple[np.ndarray, np.ndarray, BlockLedger, BlockLedger]:
    """Run one block's message flow between two ends sharing a :class:`Channel` (one thread: each step
    reads what the other wrote). Returns both final keys and both ledgers, or raises
    :class:`DistillAbort` after wiping both ends' working key material."""
    try:
        alice.open_block()
        try:
            bob.on_opening()
        except DistillAbort:
            if alice.channel.pending(BOB_TO_ALICE):
                try:
                    alice.on_estimate()          # reads Bob's authenticated abort, so both ends stop
                except DistillAbort:
                    pass
            raise
        alice.on_estimate()
        bob.reconcile(alice.serve_reconcile)
        alice.on_rec_done()
        alice.send_verify()
        bob.on_verify()
        alice.on_verify_result()
        alice.send_pa()
        bob.on_pa()
        alice.on_confirm()
        bob.on_done()
        ka = alice.output()
        kb = bob.output()
        return ka, kb, alice.ledger, bob.ledger
    except BaseException:
        alice.wipe()
        bob.wipe()
        raise


# ----------------------------------------------------------------------------------------------
# Library entry point.

def _n_pulses_of(report_or_pulses) -> int:
    if isinstance(report_or_pulses, dict):
        if "slots" not in report_or_pulses:
            raise DistillInputError("report: no 'slots' entry (pulses sent)")
        v = report_or_pulses["slots"]
    else:
        v = report_or_pulses
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise DistillInputError(f"pulses sent (report 'slots') = {v!r}: must be a positive integer")
    return int(v)


def distill(alice_rows, bob_rows, report_or_pulses, cfg, *, preshared_key: bytes | None = None,
            seed: int | None = None, method: str | None = None, options: DistillOptions | None = None,
            adversary: Adversary | None = None, run_id: bytes | None = None,
            progress: Callable[[int, int], None] | None = None) -> DistillResult:
    """Distill ``alice_rows`` and ``bob_rows`` (each ``(slot, key_byte)`` rows, as ``qkdlink sim``
    writes) into final keys, block by block (``cfg.postprocessing.block_bits`` sifted rows each).

    ``report_or_pulses``: the sim report (its ``slots``) or the number of pulses sent. ``cfg``: the
    LinkConfig of the run (source intensities and probabilities, postprocessing). ``preshared_key``:
    the authentication key both ends start from (each end builds its own :class:`KeyPool` copy);
    ``None`` derives one from ``seed`` (:func:`simulation_preshared_key`, simulation only).
    ``seed``: seeds every random choice (sample, hash seeds, Cascade permutations, LDPC padding)
    for reproducible simulations; ``None`` uses the OS CSPRNG. ``method`` overrides
    ``postprocessing.reconciliation``. ``adversary``: see :class:`Channel` (tests).

    The ends see only their own rows; :func:`distill` just runs both in one process. Any abort in
    any block raises :class:`DistillAbort` and no key is returned.
    """
    import dataclasses
    options = options or DistillOptions()
    if method is not None:
        if method not in ("auto", "cascade", "ldpc"):
            raise DistillInputError(f"method = {method!r}: must be auto, cascade or ldpc")
        cfg = dataclasses.replace(cfg, postprocessing=dataclasses.replace(cfg.postprocessing, reconciliation=method))
    a = _check_rows("alice_rows", alice_rows)
    b = _check_rows("bob_rows", bob_rows)
    n_pulses = _n_pulses_of(report_or_pulses)
    if max(int(a[-1, 0]), int(b[-1, 0])) >= n_pulses:
        raise DistillInputError(f"rows reach slot {max(int(a[-1, 0]), int(b[-1, 0]))}, beyond the {n_pulses} "
                                "slots of the run")
    block_bits = int(cfg.postprocessing.block_bits)
    if seed is None and preshared_key is None:
        raise DistillInputError("give a preshared_key (or a seed, to derive a simulation-only key)")
    psk = preshared_key if preshared_key is not None else simulation_preshared_key(seed)
    pool_a, pool_b = KeyPool(psk), KeyPool(psk)
    root = np.random.SeedSequence([int(seed), 0xD157]) if seed is not None else None
    if run_id is None:
        run_id = hashlib.sha256(f"qkdlink-distill-run/{seed}".encode()).digest()[:8] if seed is not None \
            else secrets.token_bytes(8)
    ends_run_id = (run_id, run_id) if not isinstance(run_id, tuple) else run_id
    blocks = split_blocks(int(a.shape[0]), block_bits)
    b_blocks = split_blocks(int(b.shape[0]), block_bits)
    ka_parts, kb_parts, ledgers = [], [], []
    try:
        for i, ((s, e), (sb, eb)) in enumerate(zip(blocks, b_blocks)):
            if progress:
                progress(i, len(blocks))
            first = 0 if i == 0 else int(a[s, 0])
            last = n_pulses if i == len(blocks) - 1 else int(a[e, 0])
            first_b = 0 if i == 0 else int(b[sb, 0])
            last_b = n_pulses if i == len(blocks) - 1 else int(b[eb, 0])
            if int(np.count_nonzero((a[s:e, 1] & np.uint64(2)) == 0)) > MAX_BLOCK_KEY_BITS:
                raise DistillInputError(f"block {i} has more than {MAX_BLOCK_KEY_BITS} key bits; lower "
                                        "postprocessing.block_bits")
            channel = Channel(adversary)
            rngs = [np.random.default_rng(c) for c in root.spawn(2)] if root is not None else [None, None]
            sid = [hashlib.sha256(rid + i.to_bytes(8, "big")).digest()[:16] for rid in ends_run_id]
            common = dict(cfg=cfg, block=i, channel=channel, options=options, block_bits=block_bits)
            alice = AliceEnd(a[s:e], pool=pool_a, n_pulses=last - first, session_id=sid[0], rng=rngs[0],
                             first_slot=first, **common)
            bob = BobEnd(b[sb:eb], pool=pool_b, n_pulses=last_b - first_b, session_id=sid[1], rng=rngs[1],
                         first_slot=first_b, **common)
            ka, kb, la, lb = run_block(alice, bob)
            la.timings_s = {k: la.timings_s.get(k, 0.0) + lb.timings_s.get(k, 0.0) for k in la.timings_s}
            ka_parts.append(ka)
            kb_parts.append(kb)
            ledgers.append(la)
    except BaseException:
        for k in ka_parts + kb_parts:
            k[:] = 0
        raise
    finally:
        pool_a.close()
        pool_b.close()
    ka = np.concatenate(ka_parts)
    kb = np.concatenate(kb_parts)
    ledger = Ledger.from_blocks(ledgers)
    fa, fb = key_fingerprint(ka), key_fingerprint(kb)
    ledger.keys_identical = hmac.compare_digest(fa, fb)
    ledger.key_sha256_prefix = fa[:16]
    return DistillResult(ledger=ledger, alice_key=ka, bob_key=kb)
