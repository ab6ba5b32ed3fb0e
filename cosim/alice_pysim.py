"""The Alice check under Amaranth's own simulator (``amaranth.sim``).

Same flow as the cocotb testbench — configure over the host link, emit bursts, snapshot,
read back — for two purposes: the baseline that the co-simulation benchmark compares
against, and a third opinion (next to Verilator and the model) on short runs in tests.
"""
from __future__ import annotations

import time

from amaranth.sim import Simulator

from ..gateware.alice import Alice, AliceParams
from ..gateware.alice_model import AliceSettings
from ..gateware import protocol as proto
from .alice_sequence import setup_writes, burst_writes, unpack_snapshot, SNAP_FIRST, SNAP_COUNT, RUN, STOP, SNAPSHOT

__all__ = ["run_alice_pysim"]


class _PySimLink:
    """Host-link requests over the rx/tx byte streams, one byte per clock."""

    def __init__(self, ctx, dut):
        self.ctx, self.dut = ctx, dut
        self.decoder = proto.FrameDecoder()
        self.seq = 0

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
            await ctx.tick()
            i += bool(rx_fire)
            if tx_byte is not None:
                frames.extend(self.decoder.feed(bytes([tx_byte])))
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


def run_alice_pysim(params: AliceParams, settings: AliceSettings, bursts: list[int]) -> dict:
    """Run ``bursts`` under amaranth.sim; returns snapshots and the emission wall time."""
    dut = Alice(params)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    P = params.slots_per_clock
    result = {"snapshots": [], "emit_wall_s": 0.0}

    async def bench(ctx):
        link = _PySimLink(ctx, dut)
        for addr, value in setup_writes(settings.as_dict()):
            await link.write(addr, value)
        stop = 0
        for clocks in bursts:
            stop += clocks * P
            for addr, value in burst_writes(stop):
                await link.write(addr, value)
            t0 = time.perf_counter()
            await link.write(*RUN)
            await ctx.tick().repeat(clocks)
            result["emit_wall_s"] += time.perf_counter() - t0
            await link.write(*STOP)
            await link.write(*SNAPSHOT)
            result["snapshots"].append(unpack_snapshot(await link.read(SNAP_FIRST, SNAP_COUNT)))

    sim.add_testbench(bench)
    sim.run()
    return result
