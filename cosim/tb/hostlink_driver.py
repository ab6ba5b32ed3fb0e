"""cocotb driver for the framed host link (docs/hostlink.md) through an SV ``link_pump``.

The test top instantiates ``cosim/sv/link_pump.sv`` between the device's rx/tx byte streams
and the testbench: requests are written into the pump's input ring through VPI, answers
and unsolicited frames (Bob's DETECTIONS) are read from its capture ring. Python never
steps the clock per byte; it sleeps in ``Timer`` steps of ``poll_cycles`` while waiting.
"""
from __future__ import annotations

from cocotb.triggers import Timer

from qkdlink.gateware import protocol as proto

UNSOLICITED = {proto.MsgType.DETECTIONS}


class LinkTimeout(AssertionError):
    """The gateware did not answer a request in time."""


class HostLinkDriver:
    """Request/response access to one gateware endpoint through its link pump."""

    def __init__(self, pump, *, clock_period_ns: int, depth: int = 65536,
                 timeout_cycles: int = 200_000, poll_cycles: int = 64):
        self.pump = pump
        self.period = clock_period_ns
        self.depth = depth
        self.timeout_cycles = timeout_cycles
        self.poll_cycles = poll_cycles
        self.decoder = proto.FrameDecoder()
        self.seq = 0
        self.sent = 0           # bytes queued into the input ring
        self.taken = 0          # bytes taken from the capture ring
        self.unsolicited: list = []   # frames the device sent on its own (e.g. DETECTIONS)
        self._answers: list = []

    def send(self, raw: bytes) -> None:
        """Queue bytes for the device (no clock is stepped)."""
        consumed = int(self.pump.in_count.value)
        if self.sent + len(raw) - consumed > self.depth:
            raise AssertionError("link pump input ring overrun: the device is not taking bytes")
        mem = self.pump.in_mem
        for i, b in enumerate(raw):
            mem[(self.sent + i) % self.depth].value = b
        self.sent += len(raw)
        self.pump.in_len.value = self.sent

    def collect(self) -> None:
        """Decode whatever the device has sent since the last call."""
        count = int(self.pump.out_count.value)
        if count - self.taken > self.depth:
            raise AssertionError(f"link pump capture ring overrun: {count - self.taken} bytes unread")
        if count == self.taken:
            return
        mem = self.pump.out_mem
        data = bytes(int(mem[i % self.depth].value) for i in range(self.taken, count))
        self.taken = count
        for frame in self.decoder.feed(data):
            if frame.type in UNSOLICITED:
                self.unsolicited.append(frame)
            else:
                self._answers.append(frame)

    async def wait_answers(self, n: int) -> list:
        """Sleep until ``n`` answer frames have arrived; return and forget them."""
        waited = 0
        while True:
            self.collect()
            if len(self._answers) >= n:
                out, self._answers = self._answers[:n], self._answers[n:]
                return out
            if waited >= self.timeout_cycles:
                raise LinkTimeout(f"{len(self._answers)} of {n} answers after {waited} cycles")
            await Timer(self.poll_cycles * self.period, unit="ns")
            waited += self.poll_cycles

    async def settle(self, cycles: int) -> None:
        """Let the device run ``cycles`` clocks, then collect what it sent."""
        await Timer(cycles * self.period, unit="ns")
        self.collect()

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    async def request(self, msg_type: int, payload: bytes, answers: int = 1):
        """Send one request frame; return its parsed answer (or list of ``answers`` answers)."""
        seq = self._next_seq()
        self.send(proto.encode_frame(msg_type, seq, payload))
        frames = await self.wait_answers(answers)
        parsed = [proto.parse_response(f) for f in frames]
        for a in parsed:
            if a.req_seq != seq:
                raise AssertionError(f"answer {a} to seq {a.req_seq}, expected {seq}")
        return parsed[0] if answers == 1 else parsed

    async def write(self, addr: int, value: int) -> None:
        ack = await self.request(proto.MsgType.REG_WRITE, proto.reg_write(addr, value))
        if not isinstance(ack, proto.WriteAck) or ack.status != proto.Status.OK:
            raise AssertionError(f"write of {value:#x} to {addr:#06x} failed: {ack}")

    async def read(self, addr: int, count: int = 1) -> list[int]:
        ans = await self.request(proto.MsgType.REG_READ, proto.reg_read(addr, count))
        if not isinstance(ans, proto.ReadData) or ans.status != proto.Status.OK:
            raise AssertionError(f"read of {count} registers at {addr:#06x} failed: {ans}")
        return list(ans.values)

    async def choices(self, first_slot: int, count: int):
        ans = await self.request(proto.MsgType.CHOICE_QUERY, proto.choice_query(first_slot, count))
        if not isinstance(ans, proto.ChoiceData):
            raise AssertionError(f"choice query failed: {ans}")
        return ans
