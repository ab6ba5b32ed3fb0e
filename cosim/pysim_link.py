"""Host-link requests to a design under amaranth.sim, one byte per clock (baselines, short checks)."""
from __future__ import annotations

from ..gateware import protocol as proto

__all__ = ["PySimLink"]


class PySimLink:
    """Host-link requests over the rx/tx byte streams, one byte per clock."""

    def __init__(self, ctx, dut, probe=None):
        self.ctx, self.dut = ctx, dut
        self.decoder = proto.FrameDecoder()
        self.seq = 0
        self.probe = probe          # optional 1-bit signal: count the clocks it is high
        self.probe_ticks = 0

    async def request(self, msg_type, payload):
        ctx, dut = self.ctx, self.dut
        self.seq = (self.seq + 1) & 0xFF
        raw = proto.encode_frame(msg_type, self.seq, payload)
        ctx.set(dut.tx.ready, 1)
        i, frames = 0, []
        for _ in range(20000):
            if i < len(raw):
                ctx.set(dut.rx.payload, raw[i])
                ctx.set(dut.rx.valid, 1)
            else:
                ctx.set(dut.rx.valid, 0)
            rx_fire = i < len(raw) and ctx.get(dut.rx.ready)
            tx_byte = ctx.get(dut.tx.payload) if ctx.get(dut.tx.valid) else None
            if self.probe is not None:
                self.probe_ticks += ctx.get(self.probe)
            await ctx.tick()
            i += bool(rx_fire)
            if tx_byte is not None:
                frames.extend(f for f in self.decoder.feed(bytes([tx_byte]))
                              if f.type != proto.MsgType.DETECTIONS)
            if i >= len(raw) and frames:
                ctx.set(dut.rx.valid, 0)
                return proto.parse_response(frames[-1])
        raise TimeoutError("no answer from the gateware")

    async def write(self, addr, value):
        ack = await self.request(proto.MsgType.REG_WRITE, proto.reg_write(addr, value))
        assert ack.status == proto.Status.OK, ack

    async def read(self, addr, count=1):
        ans = await self.request(proto.MsgType.REG_READ, proto.reg_read(addr, count))
        assert ans.status == proto.Status.OK, ans
        return list(ans.values)
