"""The host-link message set: the one Python definition (see ``docs/hostlink.md``).

Everything that speaks the host link uses this module: the gateware
(:mod:`qkdlink.hdl.hostlink`) takes its constants from here, the host codec uses
:func:`encode_frame`, :class:`FrameDecoder` and the typed builders/parsers, and
:class:`DeviceModel` is the bit-exact reference model of the device side that the gateware is
checked against on byte streams.

Framing: ``FLAG | stuffed(TYPE SEQ PAYLOAD CRC16) | FLAG``, HDLC-like byte stuffing, CRC-16/
CCITT-FALSE (= CRC-16/IBM-3740) big-endian over TYPE | SEQ | PAYLOAD; payload integers are
little-endian.
"""
from __future__ import annotations

import binascii
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum

from .regmap import ACCESS_RO, ACCESS_RW, RegisterMap

__all__ = [
    "FLAG", "ESC", "ESC_XOR", "MAX_PAYLOAD", "RX_MAX_PAYLOAD", "MsgType", "Status", "NakCode",
    "REQUEST_PAYLOAD_LENGTH", "REQUEST_TYPES", "request_length_ok",
    "MAX_READ_COUNT", "MAX_CHOICE_COUNT", "SLOT_BITS",
    "SIFT_MAX_ENTRIES", "SIFT_ENTRY_BYTES", "MAX_DETECTION_RECORDS", "RECORD_BYTES",
    "RECORD_BASIS_BIT", "RECORD_BIT_BIT", "CHOICE_OK", "CHOICE_LOST", "CHOICE_FUTURE",
    "INTENSITY_BLANK", "SIFT_CLASSES",
    "LINK_COUNTER_NAMES", "DECODER_COUNTER_NAMES",
    "crc16", "stuff", "encode_frame", "Frame", "FrameDecoder", "ProtocolError",
    "reg_write", "reg_read", "choice_query", "sift_query", "sift_apply",
    "answer_byte", "unpack_answer_byte", "key_byte", "unpack_key_byte", "slot_older",
    "WriteAck", "ReadData", "ChoiceData", "SiftAnswer", "SiftedKey", "Detections", "Nak",
    "parse_response", "new_sift_counts", "alice_sift_model", "bob_apply_model", "DeviceModel",
]

FLAG = 0x7E
ESC = 0x7D
ESC_XOR = 0x20
MAX_PAYLOAD = 255          # longest payload of any frame (device-to-host frames)
MAX_READ_COUNT = 32        # REG_READ: 1..32 consecutive registers
MAX_CHOICE_COUNT = 200     # CHOICE_QUERY: 1..200 slots
SLOT_BITS = 48             # slot indices are 48 bits; CHOICE_QUERY slot ranges wrap modulo 2**48
SIFT_MAX_ENTRIES = 32      # SIFT_QUERY / SIFT_APPLY / SIFT_ANSWER / SIFTED_KEY: at most 32 entries
SIFT_ENTRY_BYTES = 7       # slot u48 + one byte (basis, answer or key)
MAX_DETECTION_RECORDS = 30  # DETECTIONS: 1..30 records per frame
RECORD_BYTES = 8           # a detection record (docs/receiver.md) is a u64
# longest payload the gateware receiver accepts: a SIFT_QUERY / SIFT_APPLY with 32 entries
RX_MAX_PAYLOAD = 1 + SIFT_ENTRY_BYTES * SIFT_MAX_ENTRIES      # 225

# Detection record fields used by the link (the full layout is hdl/record_fifo.py).
RECORD_BASIS_BIT = 48
RECORD_BIT_BIT = 49
# Choice-memory statuses (hdl/choice_memory.py) and the blank intensity code (hdl/symbols.py).
CHOICE_OK, CHOICE_LOST, CHOICE_FUTURE = 0, 1, 2
INTENSITY_BLANK = 3
SIFT_CLASSES = 6           # counter class index = 2 * intensity + basis (signal/decoy/vacuum x Z/X)

_HEADER = 2                # TYPE, SEQ
_CRC = 2


class MsgType(IntEnum):
    REG_WRITE = 0x01
    REG_READ = 0x02
    CHOICE_QUERY = 0x03
    SIFT_QUERY = 0x04
    SIFT_APPLY = 0x05
    WRITE_ACK = 0x81
    READ_DATA = 0x82
    CHOICE_DATA = 0x83
    SIFT_ANSWER = 0x84
    SIFTED_KEY = 0x85
    DETECTIONS = 0x90
    NAK = 0x7F


class Status(IntEnum):
    OK = 0
    BAD_ADDRESS = 1
    BAD_VALUE = 2


class NakCode(IntEnum):
    UNKNOWN_TYPE = 1
    BAD_LENGTH = 2


# Fixed payload lengths; SIFT_QUERY / SIFT_APPLY have 1 + 7k bytes, k = 1..32 (request_length_ok).
REQUEST_PAYLOAD_LENGTH = {MsgType.REG_WRITE: 6, MsgType.REG_READ: 3, MsgType.CHOICE_QUERY: 7}
REQUEST_TYPES = frozenset((MsgType.REG_WRITE, MsgType.REG_READ, MsgType.CHOICE_QUERY,
                           MsgType.SIFT_QUERY, MsgType.SIFT_APPLY))


def request_length_ok(msg_type: int, n: int) -> bool:
    """Whether ``n`` is a payload length of request type ``msg_type`` (the ``rx_bad_length``
    rule: a function of TYPE and length only; field values are checked when executing)."""
    if msg_type in (MsgType.SIFT_QUERY, MsgType.SIFT_APPLY):
        k, r = divmod(n - 1, SIFT_ENTRY_BYTES)
        return n >= 1 and r == 0 and 1 <= k <= SIFT_MAX_ENTRIES
    return REQUEST_PAYLOAD_LENGTH.get(msg_type) == n

# The link statistics of a device, in register order (RX_FRAMES.. TX_FRAMES in the register
# map); the gateware has one 32-bit wrapping counter port per name.
LINK_COUNTER_NAMES = (
    "rx_frames", "rx_crc_errors", "rx_framing_errors", "rx_oversize", "rx_truncated",
    "rx_unknown_type", "rx_bad_length", "rx_seq_gaps", "tx_frames",
)
# The counters of the frame layer alone (host side: type and length are the message layer's job).
DECODER_COUNTER_NAMES = ("rx_frames", "rx_crc_errors", "rx_framing_errors", "rx_oversize", "rx_truncated")


class ProtocolError(ValueError):
    """A frame that is not a well-formed message (unknown type, wrong length, ...)."""


# --- framing -------------------------------------------------------------------------------

def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, unreflected, no final xor)."""
    return binascii.crc_hqx(bytes(data), 0xFFFF)


def stuff(content: bytes) -> bytes:
    """Byte-stuff ``content``: 0x7D -> 7D 5D, 0x7E -> 7D 5E (no flags added)."""
    return bytes(content).replace(b"\x7d", b"\x7d\x5d").replace(b"\x7e", b"\x7d\x5e")


def _check_range(name: str, value: int, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} {value} outside {lo}..{hi}")
    return value


def encode_frame(msg_type: int, seq: int, payload: bytes) -> bytes:
    """One complete frame on the wire: leading FLAG, stuffed content with CRC, trailing FLAG."""
    _check_range("msg_type", int(msg_type), 0, 0xFF)
    _check_range("seq", seq, 0, 0xFF)
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload length {len(payload)} outside 0..{MAX_PAYLOAD}")
    content = bytes((int(msg_type), seq)) + payload
    content += crc16(content).to_bytes(2, "big")
    return bytes((FLAG,)) + stuff(content) + bytes((FLAG,))


@dataclass(frozen=True)
class Frame:
    """A frame that passed framing and CRC checks: TYPE, SEQ and the payload (CRC removed)."""
    type: int
    seq: int
    payload: bytes


class FrameDecoder:
    """Incremental receiver applying the framing rules of docs/hostlink.md.

    Bytes before the first flag are discarded (the receiver hunts for a flag after creation).
    A frame is the bytes between two flags; zero bytes between flags is not a frame. A closed
    frame is checked in this order: content longer than ``2 + max_payload + 2`` (oversize),
    a dangling escape ``7D 7E`` (framing error), content shorter than 4 bytes (truncated),
    CRC mismatch. ``7D x`` for any other ``x`` decodes to ``x ^ 0x20``.

    ``feed`` accepts any chunking; ``iter_feed`` yields each frame as soon as its closing flag
    has been consumed, with ``counters`` up to date at that moment (the device model relies
    on that to read counters in stream order).
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD):
        self.max_payload = _check_range("max_payload", max_payload, 0, MAX_PAYLOAD)
        self._limit = _HEADER + max_payload + _CRC
        self.counters: dict[str, int] = dict.fromkeys(DECODER_COUNTER_NAMES, 0)
        self._hunting = True
        self._reset_frame()

    def _reset_frame(self):
        self._buf = bytearray()
        self._nonempty = False
        self._esc = False
        self._oversize = False

    def _absorb(self, seg: bytes):
        """Append raw bytes (no flags) of the current frame."""
        if not seg:
            return
        self._nonempty = True
        if self._oversize:
            # Only the escape state matters any more.
            if ESC in seg or self._esc:
                for b in seg:
                    self._esc = (not self._esc) and b == ESC
            return
        if not self._esc and ESC not in seg:
            out = seg
        else:
            out = bytearray()
            esc = self._esc
            for b in seg:
                if esc:
                    out.append(b ^ ESC_XOR)
                    esc = False
                elif b == ESC:
                    esc = True
                else:
                    out.append(b)
            self._esc = esc
        room = self._limit - len(self._buf)
        if len(out) > room:
            self._oversize = True
            self._buf.clear()
        else:
            self._buf += out

    def _close(self) -> Frame | None:
        if not self._nonempty:
            return None
        c = self.counters
        buf = self._buf
        if self._oversize:
            c["rx_oversize"] += 1
        elif self._esc:
            c["rx_framing_errors"] += 1
        elif len(buf) < _HEADER + _CRC:
            c["rx_truncated"] += 1
        elif crc16(buf[:-_CRC]) != int.from_bytes(buf[-_CRC:], "big"):
            c["rx_crc_errors"] += 1
        else:
            c["rx_frames"] += 1
            return Frame(buf[0], buf[1], bytes(buf[_HEADER:-_CRC]))
        return None

    def iter_feed(self, data: bytes) -> Iterator[Frame]:
        """Consume ``data``, yielding every frame completed by it, in order."""
        data = bytes(data)
        pos, n = 0, len(data)
        while pos < n:
            end = data.find(b"\x7e", pos)
            if end < 0:
                if not self._hunting:
                    self._absorb(data[pos:])
                return
            if self._hunting:
                self._hunting = False
            else:
                self._absorb(data[pos:end])
                frame = self._close()
                self._reset_frame()
                if frame is not None:
                    yield frame
            pos = end + 1

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data``; return the frames it completed (in order)."""
        return list(self.iter_feed(data))


# --- requests (host -> device) -------------------------------------------------------------

def reg_write(addr: int, value: int) -> bytes:
    """REG_WRITE payload: ``addr u16, value u32``."""
    _check_range("addr", addr, 0, 0xFFFF)
    _check_range("value", value, 0, 0xFFFF_FFFF)
    return addr.to_bytes(2, "little") + value.to_bytes(4, "little")


def reg_read(addr: int, count: int = 1) -> bytes:
    """REG_READ payload: ``addr u16, count u8`` (count 1..MAX_READ_COUNT)."""
    _check_range("addr", addr, 0, 0xFFFF)
    _check_range("count", count, 1, MAX_READ_COUNT)
    return addr.to_bytes(2, "little") + bytes((count,))


def choice_query(first_slot: int, count: int) -> bytes:
    """CHOICE_QUERY payload: ``first_slot u48, count u8`` (count 1..MAX_CHOICE_COUNT)."""
    _check_range("first_slot", first_slot, 0, (1 << SLOT_BITS) - 1)
    _check_range("count", count, 1, MAX_CHOICE_COUNT)
    return first_slot.to_bytes(6, "little") + bytes((count,))


def _entries(name: str, entries, lo: int, hi: int, field: str, fmax: int) -> list:
    entries = [tuple(e) for e in entries]
    _check_range(f"{name} entry count", len(entries), lo, hi)
    for i, e in enumerate(entries):
        if len(e) != 2:
            raise ValueError(f"{name} entry {i} must be a (slot, {field}) pair")
        _check_range(f"{name} entry {i} slot", e[0], 0, (1 << SLOT_BITS) - 1)
        _check_range(f"{name} entry {i} {field}", e[1], 0, fmax)
    return entries


def _pack_entries(entries) -> bytes:
    return b"".join(slot.to_bytes(6, "little") + bytes((b,)) for slot, b in entries)


def sift_query(entries) -> bytes:
    """SIFT_QUERY payload: ``count u8`` then ``count`` x ``(slot u48, basis u8)``.

    ``entries``: 1..32 pairs ``(slot, basis)``, basis 0 (Z) or 1 (X)."""
    entries = _entries("sift_query", entries, 1, SIFT_MAX_ENTRIES, "basis", 1)
    return bytes((len(entries),)) + _pack_entries(entries)


def sift_apply(entries) -> bytes:
    """SIFT_APPLY payload: ``count u8`` then ``count`` x ``(slot u48, answer u8)``.

    ``entries``: 1..32 pairs ``(slot, answer)`` as received in SIFT_ANSWER; ``answer`` uses bits
    0..4 only (:func:`answer_byte`)."""
    entries = _entries("sift_apply", entries, 1, SIFT_MAX_ENTRIES, "answer", 0x1F)
    return bytes((len(entries),)) + _pack_entries(entries)


def answer_byte(keep: int, intensity: int, status: int) -> int:
    """SIFT_ANSWER entry byte: ``keep (bit 0) | intensity << 1 | status << 3``."""
    _check_range("keep", int(keep), 0, 1)
    _check_range("intensity", intensity, 0, 3)
    _check_range("status", status, 0, 3)
    return int(keep) | intensity << 1 | status << 3


def unpack_answer_byte(byte: int) -> tuple[int, int, int]:
    """``(keep, intensity, status)`` of an answer byte; bits 5..7 are ignored."""
    return byte & 1, (byte >> 1) & 3, (byte >> 3) & 3


def key_byte(bit: int, basis: int, intensity: int) -> int:
    """SIFTED_KEY entry byte: ``bit | basis << 1 | intensity << 2`` (= Alice's symbol code)."""
    _check_range("bit", int(bit), 0, 1)
    _check_range("basis", int(basis), 0, 1)
    _check_range("intensity", intensity, 0, 3)
    return int(bit) | int(basis) << 1 | intensity << 2


def unpack_key_byte(byte: int) -> tuple[int, int, int]:
    """``(bit, basis, intensity)`` of a key byte."""
    return byte & 1, (byte >> 1) & 1, (byte >> 2) & 3


def slot_older(a: int, b: int) -> bool:
    """Slot ``a`` is older than ``b``: ``(a - b) mod 2**48`` is negative as a signed 48-bit
    number (bit 47 set)."""
    return bool(((a - b) >> (SLOT_BITS - 1)) & 1)


# --- responses (device -> host) ------------------------------------------------------------

@dataclass(frozen=True)
class WriteAck:
    req_seq: int
    addr: int
    status: int

    MSG_TYPE = MsgType.WRITE_ACK

    def payload(self) -> bytes:
        return bytes((self.req_seq,)) + self.addr.to_bytes(2, "little") + bytes((self.status,))


@dataclass(frozen=True)
class ReadData:
    req_seq: int
    addr: int
    count: int
    status: int
    values: tuple = ()

    MSG_TYPE = MsgType.READ_DATA

    def payload(self) -> bytes:
        head = bytes((self.req_seq,)) + self.addr.to_bytes(2, "little") + bytes((self.count, self.status))
        return head + b"".join(v.to_bytes(4, "little") for v in self.values)


@dataclass(frozen=True)
class ChoiceData:
    """CHOICE_DATA; ``entries`` are the raw entry bytes ``symbol | status << 4``."""
    req_seq: int
    first_slot: int
    count: int
    entries: tuple = ()

    MSG_TYPE = MsgType.CHOICE_DATA

    @property
    def symbols(self) -> tuple:
        return tuple(e & 0xF for e in self.entries)

    @property
    def statuses(self) -> tuple:
        return tuple((e >> 4) & 0x3 for e in self.entries)

    def payload(self) -> bytes:
        return (bytes((self.req_seq,)) + self.first_slot.to_bytes(6, "little")
                + bytes((self.count,)) + bytes(self.entries))


@dataclass(frozen=True)
class SiftAnswer:
    """SIFT_ANSWER (Alice): ``entries`` are ``(slot, answer byte)`` pairs in query order."""
    req_seq: int
    entries: tuple = ()

    MSG_TYPE = MsgType.SIFT_ANSWER

    def payload(self) -> bytes:
        return bytes((self.req_seq, len(self.entries))) + _pack_entries(self.entries)


@dataclass(frozen=True)
class SiftedKey:
    """SIFTED_KEY (Alice or Bob): the kept ``(slot, key byte)`` pairs of one request, in order."""
    req_seq: int
    entries: tuple = ()

    MSG_TYPE = MsgType.SIFTED_KEY

    def payload(self) -> bytes:
        return bytes((self.req_seq, len(self.entries))) + _pack_entries(self.entries)


@dataclass(frozen=True)
class Detections:
    """DETECTIONS (Bob, unsolicited): 64-bit detection records (docs/receiver.md)."""
    records: tuple = ()

    MSG_TYPE = MsgType.DETECTIONS
    req_seq = None          # not an answer to any request

    def payload(self) -> bytes:
        return bytes((len(self.records),)) + b"".join(r.to_bytes(RECORD_BYTES, "little") for r in self.records)


@dataclass(frozen=True)
class Nak:
    req_seq: int
    code: int
    msg_type: int

    MSG_TYPE = MsgType.NAK

    def payload(self) -> bytes:
        return bytes((self.req_seq, self.code, self.msg_type))


def _enum_or_error(enum, value: int, what: str):
    try:
        return enum(value)
    except ValueError:
        raise ProtocolError(f"{what} {value} is not one of {', '.join(f'{e.value} {e.name}' for e in enum)}") from None


def _parse_entries(p: bytes, start: int, count: int) -> tuple:
    return tuple((int.from_bytes(p[i:i + 6], "little"), p[i + 6])
                 for i in range(start, start + SIFT_ENTRY_BYTES * count, SIFT_ENTRY_BYTES))


def parse_response(frame: Frame) -> WriteAck | ReadData | ChoiceData | SiftAnswer | SiftedKey | Detections | Nak:
    """The typed device-to-host message carried by ``frame``; ProtocolError if malformed."""
    p, t = frame.payload, frame.type
    n = len(p)

    def need(expected: int, what: str):
        if n != expected:
            raise ProtocolError(f"{what} payload is {n} bytes, expected {expected}")

    if t == MsgType.WRITE_ACK:
        need(4, "WRITE_ACK")
        return WriteAck(p[0], int.from_bytes(p[1:3], "little"), _enum_or_error(Status, p[3], "WRITE_ACK status"))
    if t == MsgType.READ_DATA:
        if n < 5:
            raise ProtocolError(f"READ_DATA payload is {n} bytes, expected at least 5")
        count, status = p[3], _enum_or_error(Status, p[4], "READ_DATA status")
        if status == Status.OK:
            need(5 + 4 * count, f"READ_DATA (status OK, count {count})")
            values = tuple(int.from_bytes(p[5 + 4 * i:9 + 4 * i], "little") for i in range(count))
        else:
            need(5, f"READ_DATA (status {status.name})")
            values = ()
        return ReadData(p[0], int.from_bytes(p[1:3], "little"), count, status, values)
    if t == MsgType.CHOICE_DATA:
        if n < 8:
            raise ProtocolError(f"CHOICE_DATA payload is {n} bytes, expected at least 8")
        count = p[7]
        need(8 + count, f"CHOICE_DATA (count {count})")
        return ChoiceData(p[0], int.from_bytes(p[1:7], "little"), count, tuple(p[8:]))
    if t in (MsgType.SIFT_ANSWER, MsgType.SIFTED_KEY):
        name, lo = (("SIFT_ANSWER", 1) if t == MsgType.SIFT_ANSWER else ("SIFTED_KEY", 0))
        if n < 2:
            raise ProtocolError(f"{name} payload is {n} bytes, expected at least 2")
        count = p[1]
        if not lo <= count <= SIFT_MAX_ENTRIES:
            raise ProtocolError(f"{name} count {count} outside {lo}..{SIFT_MAX_ENTRIES}")
        need(2 + SIFT_ENTRY_BYTES * count, f"{name} (count {count})")
        return (SiftAnswer if t == MsgType.SIFT_ANSWER else SiftedKey)(p[0], _parse_entries(p, 2, count))
    if t == MsgType.DETECTIONS:
        if n < 1:
            raise ProtocolError("DETECTIONS payload is 0 bytes, expected at least 1")
        count = p[0]
        if not 1 <= count <= MAX_DETECTION_RECORDS:
            raise ProtocolError(f"DETECTIONS count {count} outside 1..{MAX_DETECTION_RECORDS}")
        need(1 + RECORD_BYTES * count, f"DETECTIONS (count {count})")
        return Detections(tuple(int.from_bytes(p[i:i + RECORD_BYTES], "little")
                                for i in range(1, 1 + RECORD_BYTES * count, RECORD_BYTES)))
    if t == MsgType.NAK:
        need(3, "NAK")
        return Nak(p[0], _enum_or_error(NakCode, p[1], "NAK code"), p[2])
    if t in REQUEST_TYPES:
        raise ProtocolError(f"message type {t:#04x} ({MsgType(t).name}) is a request, not a response")
    raise ProtocolError(f"unknown message type {t:#04x}")


# --- sifting reference (per message) ------------------------------------------------------

def new_sift_counts() -> dict:
    """Zeroed sifting counts: ``detected`` and ``sifted`` are lists indexed by the class
    ``2 * intensity + basis`` (0..5); ``lost`` (Alice), ``unanswered`` and ``unmatched`` (Bob)."""
    return {"detected": [0] * SIFT_CLASSES, "sifted": [0] * SIFT_CLASSES,
            "lost": 0, "unanswered": 0, "unmatched": 0}


def _add_counts(total: dict, part: dict):
    for k, v in part.items():
        if isinstance(v, list):
            total[k] = [a + b for a, b in zip(total[k], v)]
        else:
            total[k] += v


def alice_sift_model(symbol_lookup, queries):
    """Alice's SIFT_QUERY decision, entry by entry.

    ``symbol_lookup(slot) -> (symbol, status)`` (the choice memory; symbol = ``bit | basis << 1
    | intensity << 2``), ``queries``: ``(slot, basis)`` pairs. Returns ``(answers, kept,
    counts)``: the SIFT_ANSWER ``(slot, answer byte)`` entries, the SIFTED_KEY ``(slot, key
    byte)`` entries (key byte = Alice's symbol) and :func:`new_sift_counts` counts.

    keep = status OK and intensity not blank and Alice's basis = queried basis; the answer's
    intensity is Alice's when OK, else 0. *detected*: OK and not blank (class of Alice's
    intensity and basis); *sifted*: kept; *lost*: status not OK (LOST or FUTURE).
    """
    answers, kept, counts = [], [], new_sift_counts()
    for slot, basis in queries:
        symbol, status = symbol_lookup(slot)
        ok = status == CHOICE_OK
        intensity = (symbol >> 2) & 3 if ok else 0
        a_basis = (symbol >> 1) & 1
        detected = ok and intensity != INTENSITY_BLANK
        keep = detected and a_basis == basis
        answers.append((slot, answer_byte(keep, intensity, status)))
        if detected:
            counts["detected"][2 * intensity + a_basis] += 1
        if keep:
            counts["sifted"][2 * intensity + a_basis] += 1
            kept.append((slot, symbol & 0xF))
        if not ok:
            counts["lost"] += 1
    return answers, kept, counts


def bob_apply_model(pending, answers):
    """Bob's SIFT_APPLY merge-join of his pending detections with Alice's answers.

    ``pending``: ``(slot, basis, bit)`` in the order the records were sent; ``answers``:
    ``(slot, answer byte)``. For each answer, pending detections older than its slot
    (:func:`slot_older`) are dropped (*unanswered*); a pending detection of the same slot is
    consumed: *detected* if the answer's status is OK and its intensity not blank (class of
    Alice's intensity and Bob's basis), *kept* (and *sifted*) if moreover the keep bit is set,
    with key byte ``bit | basis << 1 | intensity << 2`` (Bob's bit and basis); an answer
    without a pending detection of its slot is *unmatched*. Answer bits 5..7 are ignored.
    Returns ``(kept, remaining_pending, counts)``.
    """
    pending = list(pending)
    i, kept, counts = 0, [], new_sift_counts()
    for slot, ans in answers:
        while i < len(pending) and slot_older(pending[i][0], slot):
            i += 1
            counts["unanswered"] += 1
        if i < len(pending) and pending[i][0] == slot:
            _, basis, bit = pending[i]
            i += 1
            keep, intensity, status = unpack_answer_byte(ans)
            if status == CHOICE_OK and intensity != INTENSITY_BLANK:
                counts["detected"][2 * intensity + basis] += 1
                if keep:
                    counts["sifted"][2 * intensity + basis] += 1
                    kept.append((slot, key_byte(bit, basis, intensity)))
        else:
            counts["unmatched"] += 1
    return kept, pending[i:], counts


# --- reference model of the device side ----------------------------------------------------

ChoiceSource = Callable[[int], tuple[int, int]] | Mapping[int, tuple[int, int]]


class DeviceModel:
    """Bit-exact reference of :class:`qkdlink.hdl.hostlink.HostLink` + a register bank.

    ``regmap``: the device's register map. ``ro``: values of the read-only registers, either a
    mapping from register name to an int or a zero-argument callable, or a callable
    ``ro(name) -> int``; read-only registers named like a link counter (RX_FRAMES ..
    TX_FRAMES) that ``ro`` does not provide read the model's own counters, as the gateware
    wires them. ``choice``: ``choice(slot) -> (symbol, status)`` or a mapping slot -> (symbol,
    status); ``None`` means the device has no choice memory and CHOICE_QUERY is an unknown type.
    ``sift_query`` (Alice, needs ``choice``) and ``sift_apply`` (Bob, with a pending queue of
    ``pending_depth`` detections) enable the sifting messages, as the gateware parameters of
    the same names; a disabled type is an unknown type.

    ``feed(data) -> bytes`` processes host-to-device bytes and returns the device-to-host bytes,
    frame by frame in stream order. State: ``counters`` (the 9 link counters, 32-bit wrapping),
    ``rw`` (values of the RW registers by name), ``strobes`` (list of ``(name, bits)`` written
    to STROBE registers), ``tx_seq``, ``sift_counts`` (:func:`new_sift_counts`: the number of
    pulses of each sifting counter output), ``pending`` (Bob's pending ``(slot, basis, bit)``)
    and ``waiting`` (records offered but not sent yet).

    **Bob's records.** ``add_records(records)`` offers 64-bit records (the record FIFO's
    output). Records are sent ("flushed") at two kinds of points: at the start of every
    ``feed`` call and after every answered request; a flush sends DETECTIONS frames of
    ``min(waiting, 30, room in the pending queue)`` records while records wait, the queue
    has room and records are enabled. ``records_enable`` / ``record_bits`` are CTRL.RECORDS
    and CTRL.RECORD_BITS of ``rw`` if the register map has those fields, else the
    attributes of those names (default 1 and 0).

    Timing contract with the gateware: the gateware sends a DETECTIONS frame whenever it is
    idle, no received request is waiting to be executed and records are on its ``records``
    stream, taking them while the stream stays valid. Its output equals the model's byte for
    byte when (1) records offered to the model before a ``feed`` are presented to the
    gateware back to back and all taken (or blocked: queue full, records disabled) before the
    first request of that ``feed`` closes, and (2) each ``feed`` holds one request whose
    answer is out before the next records are offered. Otherwise the interleaving of
    DETECTIONS with answers (hence device SEQs and TX_FRAMES) and the split of records into
    DETECTIONS frames depend on timing; the answers per type and the concatenated records of
    all DETECTIONS frames still match, and SIFT_APPLY results match as long as every record
    the model sent before a SIFT_APPLY had been taken by the gateware before it closed.
    """

    def __init__(self, regmap: RegisterMap, ro: Mapping | Callable | None = None,
                 choice: ChoiceSource | None = None, *, sift_query: bool = False,
                 sift_apply: bool = False, pending_depth: int = 1024):
        if sift_query and choice is None:
            raise ValueError("sift_query needs a choice memory (choice=...)")
        if sift_apply and (choice is not None or sift_query):
            raise ValueError("sift_apply (Bob) does not combine with choice / sift_query (Alice)")
        self.regmap = regmap
        self._ro = ro if ro is not None else {}
        self._choice = choice
        self._decoder = FrameDecoder(RX_MAX_PAYLOAD)
        self.counters: dict[str, int] = dict.fromkeys(LINK_COUNTER_NAMES, 0)
        self.rw = {r.name: r.reset for r in regmap if r.access == ACCESS_RW}
        self.strobes: list[tuple[str, int]] = []
        self.tx_seq = 0
        self._prev_seq: int | None = None
        self._supported = {MsgType.REG_WRITE, MsgType.REG_READ}
        if choice is not None:
            self._supported.add(MsgType.CHOICE_QUERY)
        if sift_query:
            self._supported.add(MsgType.SIFT_QUERY)
        self._bob = bool(sift_apply)
        if self._bob:
            self._supported.add(MsgType.SIFT_APPLY)
        self.pending_depth = _check_range("pending_depth", pending_depth, 1, 1 << 20)
        self.sift_counts = new_sift_counts()
        self.pending: list[tuple[int, int, int]] = []
        self.waiting: list[int] = []
        self.records_enable = 1
        self.record_bits = 0

    # register access ---------------------------------------------------------------------
    def _ro_value(self, name: str) -> int:
        src = self._ro
        if callable(src):
            return src(name)
        if name in src:
            v = src[name]
            return v() if callable(v) else v
        if name.lower() in self.counters:
            return self.counters[name.lower()]
        raise KeyError(f"DeviceModel: no value for read-only register {name}")

    def read_register(self, addr: int) -> int | None:
        """The bus read of ``addr``: its value, or None for a bus error (unmapped)."""
        reg = self.regmap.at(addr)
        if reg is None:
            return None
        if reg.access == ACCESS_RW:
            value = self.rw[reg.name]
        elif reg.access == ACCESS_RO:
            value = self._ro_value(reg.name)
        else:
            value = 0
        return value & ((1 << reg.width) - 1)

    def write_register(self, addr: int, value: int) -> bool:
        """The bus write of ``addr``; False for a bus error (unmapped or read-only)."""
        reg = self.regmap.at(addr)
        if reg is None or reg.access == ACCESS_RO:
            return False
        value &= (1 << reg.width) - 1
        if reg.access == ACCESS_RW:
            self.rw[reg.name] = value
        else:
            self.strobes.append((reg.name, value))
        return True

    def _lookup(self, slot: int) -> tuple[int, int]:
        src = self._choice
        symbol, status = src(slot) if callable(src) else src[slot]
        return symbol & 0xF, status & 0x3

    def _choice_entry(self, slot: int) -> int:
        symbol, status = self._lookup(slot)
        return symbol | status << 4

    # Bob's records ---------------------------------------------------------------------------
    def _ctrl_flag(self, field: str, attr: str) -> int:
        if "CTRL" in self.regmap:
            try:
                f = self.regmap["CTRL"].field(field)
            except KeyError:
                f = None
            if f is not None:
                return (self.rw["CTRL"] >> f.offset) & 1
        return int(bool(getattr(self, attr)))

    def add_records(self, records):
        """Offer 64-bit detection records (Bob): they are sent at the next flush point."""
        if not self._bob:
            raise ValueError("add_records: the model has no sift_apply (Bob) role")
        self.waiting += [int(r) for r in records]

    def _flush(self) -> bytes:
        out = bytearray()
        if not self._bob:
            return b""
        while self.waiting and self._ctrl_flag("RECORDS", "records_enable"):
            room = self.pending_depth - len(self.pending)
            if room <= 0:
                break
            n = min(len(self.waiting), MAX_DETECTION_RECORDS, room)
            recs, self.waiting = self.waiting[:n], self.waiting[n:]
            bits = self._ctrl_flag("RECORD_BITS", "record_bits")
            for r in recs:
                self.pending.append((r & ((1 << SLOT_BITS) - 1), (r >> RECORD_BASIS_BIT) & 1,
                                     (r >> RECORD_BIT_BIT) & 1))
            if not bits:
                recs = [r & ~(1 << RECORD_BIT_BIT) for r in recs]
            out += self._answer(Detections(tuple(recs)))
        return bytes(out)

    # link ----------------------------------------------------------------------------------
    def _bump(self, name: str):
        self.counters[name] = (self.counters[name] + 1) & 0xFFFF_FFFF

    def _answer(self, msg) -> bytes:
        out = encode_frame(msg.MSG_TYPE, self.tx_seq, msg.payload())
        self.tx_seq = (self.tx_seq + 1) & 0xFF
        self._bump("tx_frames")
        return out

    def _execute(self, f: Frame) -> list:
        p = f.payload
        if f.type == MsgType.REG_WRITE:
            addr = int.from_bytes(p[0:2], "little")
            ok = self.write_register(addr, int.from_bytes(p[2:6], "little"))
            return [WriteAck(f.seq, addr, Status.OK if ok else Status.BAD_ADDRESS)]
        if f.type == MsgType.REG_READ:
            addr, count = int.from_bytes(p[0:2], "little"), p[2]
            if not 1 <= count <= MAX_READ_COUNT:
                return [ReadData(f.seq, addr, count, Status.BAD_VALUE)]
            values = [self.read_register(a) if a <= 0xFFFF else None for a in range(addr, addr + count)]
            if None in values:
                return [ReadData(f.seq, addr, count, Status.BAD_ADDRESS)]
            return [ReadData(f.seq, addr, count, Status.OK, tuple(values))]
        if f.type == MsgType.CHOICE_QUERY:
            first, count = int.from_bytes(p[0:6], "little"), p[6]
            if not 1 <= count <= MAX_CHOICE_COUNT:
                return [Nak(f.seq, NakCode.BAD_LENGTH, f.type)]
            mask = (1 << SLOT_BITS) - 1
            return [ChoiceData(f.seq, first, count,
                               tuple(self._choice_entry((first + i) & mask) for i in range(count)))]
        # SIFT_QUERY / SIFT_APPLY: the length is 1 + 7k (checked); count must be k
        entries = _parse_entries(p, 1, (len(p) - 1) // SIFT_ENTRY_BYTES)
        if p[0] != len(entries) or (f.type == MsgType.SIFT_QUERY and any(b > 1 for _, b in entries)):
            return [Nak(f.seq, NakCode.BAD_LENGTH, f.type)]
        if f.type == MsgType.SIFT_QUERY:
            answers, kept, counts = alice_sift_model(self._lookup, entries)
            _add_counts(self.sift_counts, counts)
            return [SiftAnswer(f.seq, tuple(answers)), SiftedKey(f.seq, tuple(kept))]
        kept, self.pending, counts = bob_apply_model(self.pending, entries)
        _add_counts(self.sift_counts, counts)
        return [SiftedKey(f.seq, tuple(kept))]

    def _process(self, f: Frame) -> bytes:
        if self._prev_seq is not None and f.seq != (self._prev_seq + 1) & 0xFF:
            self._bump("rx_seq_gaps")
        self._prev_seq = f.seq
        if f.type not in self._supported:
            self._bump("rx_unknown_type")
            return self._answer(Nak(f.seq, NakCode.UNKNOWN_TYPE, f.type))
        if not request_length_ok(f.type, len(f.payload)):
            self._bump("rx_bad_length")
            return self._answer(Nak(f.seq, NakCode.BAD_LENGTH, f.type))
        self._bump("rx_frames")
        return b"".join(self._answer(msg) for msg in self._execute(f))

    def _sync_frame_counters(self):
        d = self._decoder.counters
        for name in ("rx_crc_errors", "rx_framing_errors", "rx_oversize", "rx_truncated"):
            self.counters[name] = d[name] & 0xFFFF_FFFF

    def feed(self, data: bytes) -> bytes:
        """Process host-to-device bytes; return the device-to-host bytes they cause (with
        Bob's DETECTIONS at the flush points, see the class docstring)."""
        out = bytearray(self._flush())
        for frame in self._decoder.iter_feed(data):
            self._sync_frame_counters()
            out += self._process(frame)
            out += self._flush()
        self._sync_frame_counters()
        return bytes(out)
