"""cocotb driver for the framed host link (docs/hostlink.md) of a gateware top.

The top exposes the link as two byte streams: ``rx_payload/rx_valid/rx_ready`` into the
gateware and ``tx_payload/tx_valid/tx_ready`` out of it. The driver wakes once per clock only
while a transaction is on the wire (tens to hundreds of cycles); the long emission runs in
between advance the simulator with one ``Timer``.
"""
from __future__ import annotations

from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from qkdlink.gateware import protocol as proto


class LinkTimeout(AssertionError):
    """The gateware did not answer a request in time."""


class HostLinkDriver:
    """Request/response access to a gateware endpoint over its host-link byte streams."""

    def __init__(self, dut, clk, *, timeout_cycles: int = 20000):
        self.dut = dut
        self.clk = clk
        self.timeout_cycles = timeout_cycles
        self.decoder = proto.FrameDecoder()
        self.seq = 0
        dut.rx_valid.value = 0
        dut.rx_payload.value = 0
        dut.tx_ready.value = 1

    async def exchange(self, raw: bytes, n_frames: int = 1) -> list:
        """Send ``raw`` bytes and collect ``n_frames`` decoded frames from the gateware."""
        dut = self.dut
        frames: list = []
        i = 0
        for _ in range(self.timeout_cycles + 4 * len(raw)):
            await FallingEdge(self.clk)
            if i < len(raw):
                dut.rx_payload.value = raw[i]
                dut.rx_valid.value = 1
            else:
                dut.rx_valid.value = 0
            await ReadOnly()
            rx_fire = i < len(raw) and int(dut.rx_ready.value)
            tx_byte = int(dut.tx_payload.value) if int(dut.tx_valid.value) else None
            await RisingEdge(self.clk)
            if rx_fire:
                i += 1
            if tx_byte is not None:
                frames.extend(self.decoder.feed(bytes([tx_byte])))
            if i >= len(raw) and len(frames) >= n_frames:
                await FallingEdge(self.clk)
                dut.rx_valid.value = 0
                return frames
        raise LinkTimeout(f"no answer after {self.timeout_cycles} cycles ({len(frames)} of {n_frames} frames)")

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    async def request(self, msg_type: int, payload: bytes):
        """Send one request frame and return its parsed answer."""
        seq = self._next_seq()
        frames = await self.exchange(proto.encode_frame(msg_type, seq, payload))
        answer = proto.parse_response(frames[-1])
        if answer.req_seq != seq:
            raise AssertionError(f"answer to seq {answer.req_seq}, expected {seq}")
        return answer

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
