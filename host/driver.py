"""Host driver for an endpoint (Alice or Bob) over any byte transport.

The same code talks to a board's UART, to the pseudo-terminal bridged to the Verilated
gateware's UART, or to the co-simulation's byte-level host link (DESIGN contract 4): it
encodes requests with :mod:`qkdlink.gateware.protocol`, matches answers by sequence number,
keeps Bob's unsolicited DETECTIONS frames, and recovers from a dirty line.

Recovery rules (docs/hostlink.md framing): the device drops any frame with a bad CRC or
escape, so garbage on the line costs at most the frame it corrupts. :meth:`Device.resync`
sends two FLAG bytes (closing whatever partial frame the device holds), drains the input
and resets the decoder. An answer whose sequence number is not the one awaited (a late
answer to an earlier, timed-out request, or to a previous host process) is counted in
``stale_answers`` and dropped. Reads are retried after a timeout (they have no side
effects); writes are not (a strobe must not fire twice) — a timed-out write raises
:class:`LinkTimeout` and the caller decides.
"""
from __future__ import annotations

import os
import time
from collections import deque

import numpy as np

from ..gateware import protocol as proto
from ..gateware.regmap import ALICE_REGISTERS, BOB_REGISTERS, ID_ALICE, ID_BOB
from .transport import Transport

__all__ = ["Device", "DeviceError", "LinkTimeout", "ROLE_REGISTERS"]

ROLE_REGISTERS = {"alice": ALICE_REGISTERS, "bob": BOB_REGISTERS}
_ROLE_BY_ID = {ID_ALICE: "alice", ID_BOB: "bob"}


class DeviceError(RuntimeError):
    """The device answered with an error (NAK, bad status) or something unexpected."""


class LinkTimeout(DeviceError):
    """No answer within the timeout."""


class Device:
    """Request/response access to one endpoint; ``role`` is found from the ID register."""

    def __init__(self, transport: Transport, *, timeout_s: float = 2.0, read_retries: int = 2,
                 role: str | None = None):
        if role is not None and role not in ROLE_REGISTERS:
            raise ValueError(f"role = {role!r}: must be 'alice' or 'bob'")
        self.transport = transport
        self.timeout_s = float(timeout_s)
        self.read_retries = int(read_retries)
        self.decoder = proto.FrameDecoder()
        self.seq = os.urandom(1)[0]      # a restarted host does not reuse its predecessor's numbers
        self.stale_answers = 0
        self.unsolicited: deque = deque()
        self.role = role
        self.resync()
        if role is None:
            ident = self._read_addr(ALICE_REGISTERS["ID"].addr, 1)[0]
            if ident not in _ROLE_BY_ID:
                raise DeviceError(f"{transport.name}: ID register reads {ident:#010x}, not an "
                                  f"Alice ({ID_ALICE:#010x}) or Bob ({ID_BOB:#010x}) endpoint")
            self.role = _ROLE_BY_ID[ident]
        self.registers = ROLE_REGISTERS[self.role]

    # -- framing ------------------------------------------------------------------------------
    def resync(self, drain_s: float = 0.05) -> None:
        """Close any partial frame at the device, drop pending input, reset the decoder."""
        self.transport.write(bytes((proto.FLAG, proto.FLAG)))
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline:
            data = self.transport.read(max(0.0, deadline - time.monotonic()))
            for frame in proto.FrameDecoder().feed(data) if data else ():
                if frame.type == proto.MsgType.DETECTIONS:
                    self.unsolicited.append(proto.parse_response(frame))
        self.decoder = proto.FrameDecoder()

    def _frames(self, timeout_s: float):
        data = self.transport.read(timeout_s)
        return self.decoder.feed(data) if data else []

    def request(self, msg_type: int, payload: bytes, answers: int = 1, timeout_s: float | None = None):
        """Send one request; return its parsed answer (a list if ``answers`` > 1)."""
        self.seq = (self.seq + 1) & 0xFF
        seq = self.seq
        self.transport.write(proto.encode_frame(msg_type, seq, payload))
        got = []
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while len(got) < answers:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LinkTimeout(f"{self.transport.name}: {len(got)} of {answers} answers to "
                                  f"{proto.MsgType(msg_type).name} seq {seq} within the timeout")
            for frame in self._frames(min(left, 0.1)):
                try:
                    msg = proto.parse_response(frame)
                except proto.ProtocolError as e:
                    raise DeviceError(f"{self.transport.name}: malformed answer: {e}") from e
                if isinstance(msg, proto.Detections):
                    self.unsolicited.append(msg)
                elif msg.req_seq != seq:
                    self.stale_answers += 1
                elif isinstance(msg, proto.Nak):
                    raise DeviceError(f"{self.transport.name}: {proto.MsgType(msg_type).name} NAKed: "
                                      f"{proto.NakCode(msg.code).name}")
                else:
                    got.append(msg)
        return got[0] if answers == 1 else got

    # -- registers ----------------------------------------------------------------------------
    def _addr(self, reg) -> int:
        if isinstance(reg, str):
            if reg not in self.registers:
                raise KeyError(f"{self.role} has no register {reg!r}")
            return self.registers[reg].addr
        return int(reg)

    def _read_addr(self, addr: int, count: int) -> list[int]:
        for attempt in range(self.read_retries + 1):
            try:
                ans = self.request(proto.MsgType.REG_READ, proto.reg_read(addr, count))
                break
            except LinkTimeout:
                if attempt == self.read_retries:
                    raise
                self.resync()
        if not isinstance(ans, proto.ReadData) or ans.status != proto.Status.OK:
            raise DeviceError(f"read of {count} register(s) at {addr:#06x}: "
                              f"{proto.Status(ans.status).name if hasattr(ans, 'status') else ans}")
        return list(ans.values)

    def read(self, reg, count: int = 1) -> int | list[int]:
        """One register (name or address) or ``count`` consecutive ones (a list)."""
        values = []
        addr = self._addr(reg)
        while len(values) < count:
            n = min(proto.MAX_READ_COUNT, count - len(values))
            values += self._read_addr(addr + len(values), n)
        return values[0] if count == 1 else values

    def write(self, reg, value: int) -> None:
        """Write a register (name or address); a bad address/status raises :class:`DeviceError`."""
        addr = self._addr(reg)
        ack = self.request(proto.MsgType.REG_WRITE, proto.reg_write(addr, int(value)))
        if not isinstance(ack, proto.WriteAck) or ack.status != proto.Status.OK:
            raise DeviceError(f"write of {int(value):#x} to {addr:#06x}: "
                              f"{proto.Status(ack.status).name if hasattr(ack, 'status') else ack}")

    def field_value(self, reg: str, **fields: int) -> int:
        """The register word with the named fields set (others 0)."""
        r = self.registers[reg]
        word = 0
        for name, v in fields.items():
            f = r.field(name)
            if not 0 <= int(v) < (1 << f.width):
                raise ValueError(f"{reg}.{name} = {v!r}: outside 0..{(1 << f.width) - 1}")
            word |= int(v) << f.offset
        return word

    def identify(self) -> dict:
        """Role, register-map version and the BUILD fields (S, P, PRNG/QRNG ...)."""
        ident, version, build = self.read("ID", 3)
        r = self.registers["BUILD"]
        fields = {f.name: (build >> f.offset) & ((1 << f.width) - 1) for f in r.fields}
        return {"role": _ROLE_BY_ID.get(ident, "unknown"), "id": ident, "version": version, **fields}

    def snapshot(self) -> dict:
        """Trigger CMD.SNAPSHOT and read every SNAP_* register (48-bit ones combined)."""
        self.write("CMD", self.field_value("CMD", SNAPSHOT=1))
        regs = [r for r in self.registers if r.name.startswith("SNAP_")]
        values = {}
        for first, count in _runs(sorted(r.addr for r in regs)):
            values.update(zip(range(first, first + count), self._read_addr(first, count)))
        result = {}
        for r in regs:
            v = values[r.addr]
            if r.name.endswith("_LO") and r.name[:-3] + "_HI" in self.registers:
                result[r.name[:-3]] = v | (values[self.registers[r.name[:-3] + "_HI"].addr] << 32)
            elif not (r.name.endswith("_HI") and r.name[:-3] + "_LO" in self.registers):
                result[r.name] = v
        return result

    def link_counters(self) -> dict:
        """The host-link statistics registers (RX_FRAMES ... TX_FRAMES), live."""
        names = [r.name for r in self.registers if 0x00E0 <= r.addr < 0x00F0]
        return dict(zip(names, self.read(names[0], len(names))))

    # -- Bob's detection records ----------------------------------------------------------------
    def records(self, *, max_records: int | None = None, timeout_s: float = 0.2) -> np.ndarray:
        """Detection records received so far (uint64), waiting up to ``timeout_s`` for more."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for frame in self._frames(min(0.05, max(0.0, deadline - time.monotonic()))):
                msg = proto.parse_response(frame)
                if isinstance(msg, proto.Detections):
                    self.unsolicited.append(msg)
                else:
                    self.stale_answers += 1
            if max_records is not None and sum(len(m.records) for m in self.unsolicited) >= max_records:
                break
        recs = [r for m in self.unsolicited for r in m.records]
        self.unsolicited.clear()
        if max_records is not None and len(recs) > max_records:
            self.unsolicited.append(proto.Detections(tuple(recs[max_records:])))
            recs = recs[:max_records]
        return np.array(recs, dtype=np.uint64)


def _runs(addrs: list[int]):
    """(first, count) runs of consecutive addresses, at most MAX_READ_COUNT long."""
    i = 0
    while i < len(addrs):
        j = i
        while j + 1 < len(addrs) and addrs[j + 1] == addrs[j] + 1 and j + 1 - i < proto.MAX_READ_COUNT:
            j += 1
        yield addrs[i], j + 1 - i
        i = j + 1
