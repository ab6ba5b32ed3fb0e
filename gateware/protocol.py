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
    "REQUEST_PAYLOAD_LENGTH", "MAX_READ_COUNT", "MAX_CHOICE_COUNT", "SLOT_BITS",
    "LINK_COUNTER_NAMES", "DECODER_COUNTER_NAMES",
    "crc16", "stuff", "encode_frame", "Frame", "FrameDecoder", "ProtocolError",
    "reg_write", "reg_read", "choice_query",
    "WriteAck", "ReadData", "ChoiceData", "Nak", "parse_response", "DeviceModel",
]

FLAG = 0x7E
ESC = 0x7D
ESC_XOR = 0x20
MAX_PAYLOAD = 255          # longest payload of any frame (device-to-host frames)
RX_MAX_PAYLOAD = 16        # longest payload the gateware receiver accepts
MAX_READ_COUNT = 32        # REG_READ: 1..32 consecutive registers
MAX_CHOICE_COUNT = 200     # CHOICE_QUERY: 1..200 slots
SLOT_BITS = 48             # slot indices are 48 bits; CHOICE_QUERY slot ranges wrap modulo 2**48

_HEADER = 2                # TYPE, SEQ
_CRC = 2


class MsgType(IntEnum):
    REG_WRITE = 0x01
    REG_READ = 0x02
    CHOICE_QUERY = 0x03
    WRITE_ACK = 0x81
    READ_DATA = 0x82
    CHOICE_DATA = 0x83
    NAK = 0x7F


class Status(IntEnum):
    OK = 0
    BAD_ADDRESS = 1
    BAD_VALUE = 2


class NakCode(IntEnum):
    UNKNOWN_TYPE = 1
    BAD_LENGTH = 2


REQUEST_PAYLOAD_LENGTH = {MsgType.REG_WRITE: 6, MsgType.REG_READ: 3, MsgType.CHOICE_QUERY: 7}

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


def parse_response(frame: Frame) -> WriteAck | ReadData | ChoiceData | Nak:
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
    if t == MsgType.NAK:
        need(3, "NAK")
        return Nak(p[0], _enum_or_error(NakCode, p[1], "NAK code"), p[2])
    if t in (MsgType.REG_WRITE, MsgType.REG_READ, MsgType.CHOICE_QUERY):
        raise ProtocolError(f"message type {t:#04x} ({MsgType(t).name}) is a request, not a response")
    raise ProtocolError(f"unknown message type {t:#04x}")


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

    ``feed(data) -> bytes`` processes host-to-device bytes and returns the device-to-host bytes,
    frame by frame in stream order. State: ``counters`` (the 9 link counters, 32-bit wrapping),
    ``rw`` (values of the RW registers by name), ``strobes`` (list of ``(name, bits)`` written
    to STROBE registers), ``tx_seq``.
    """

    def __init__(self, regmap: RegisterMap, ro: Mapping | Callable | None = None,
                 choice: ChoiceSource | None = None):
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

    def _choice_entry(self, slot: int) -> int:
        src = self._choice
        symbol, status = src(slot) if callable(src) else src[slot]
        return (symbol & 0xF) | (status & 0x3) << 4

    # link ----------------------------------------------------------------------------------
    def _bump(self, name: str):
        self.counters[name] = (self.counters[name] + 1) & 0xFFFF_FFFF

    def _answer(self, msg) -> bytes:
        out = encode_frame(msg.MSG_TYPE, self.tx_seq, msg.payload())
        self.tx_seq = (self.tx_seq + 1) & 0xFF
        self._bump("tx_frames")
        return out

    def _execute(self, f: Frame):
        p = f.payload
        if f.type == MsgType.REG_WRITE:
            addr = int.from_bytes(p[0:2], "little")
            ok = self.write_register(addr, int.from_bytes(p[2:6], "little"))
            return WriteAck(f.seq, addr, Status.OK if ok else Status.BAD_ADDRESS)
        if f.type == MsgType.REG_READ:
            addr, count = int.from_bytes(p[0:2], "little"), p[2]
            if not 1 <= count <= MAX_READ_COUNT:
                return ReadData(f.seq, addr, count, Status.BAD_VALUE)
            values = [self.read_register(a) if a <= 0xFFFF else None for a in range(addr, addr + count)]
            if None in values:
                return ReadData(f.seq, addr, count, Status.BAD_ADDRESS)
            return ReadData(f.seq, addr, count, Status.OK, tuple(values))
        # CHOICE_QUERY
        first, count = int.from_bytes(p[0:6], "little"), p[6]
        if not 1 <= count <= MAX_CHOICE_COUNT:
            return Nak(f.seq, NakCode.BAD_LENGTH, f.type)
        mask = (1 << SLOT_BITS) - 1
        return ChoiceData(f.seq, first, count, tuple(self._choice_entry((first + i) & mask) for i in range(count)))

    def _process(self, f: Frame) -> bytes:
        if self._prev_seq is not None and f.seq != (self._prev_seq + 1) & 0xFF:
            self._bump("rx_seq_gaps")
        self._prev_seq = f.seq
        if f.type not in self._supported:
            self._bump("rx_unknown_type")
            return self._answer(Nak(f.seq, NakCode.UNKNOWN_TYPE, f.type))
        if len(f.payload) != REQUEST_PAYLOAD_LENGTH[f.type]:
            self._bump("rx_bad_length")
            return self._answer(Nak(f.seq, NakCode.BAD_LENGTH, f.type))
        self._bump("rx_frames")
        return self._answer(self._execute(f))

    def _sync_frame_counters(self):
        d = self._decoder.counters
        for name in ("rx_crc_errors", "rx_framing_errors", "rx_oversize", "rx_truncated"):
            self.counters[name] = d[name] & 0xFFFF_FFFF

    def feed(self, data: bytes) -> bytes:
        """Process host-to-device bytes; return the device-to-host bytes they cause."""
        out = bytearray()
        for frame in self._decoder.iter_feed(data):
            self._sync_frame_counters()
            out += self._process(frame)
        self._sync_frame_counters()
        return bytes(out)
