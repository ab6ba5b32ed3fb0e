"""A first-word-fall-through FIFO in block RAM without read-during-write emulation.

:class:`BramFifo` behaves, clock for clock, like :class:`amaranth.lib.fifo.SyncFIFOBuffered`
(``depth - 1`` words in block RAM and one in the output register; a word written in clock
``c`` into an empty FIFO is readable in ``c + 2``), but reads its RAM through
:func:`qkdlink.hdl.bram.read_port`, so Yosys maps it without the iCE40 read-first emulation
(a bypass register and multiplexer per data bit). The read is enabled only while the RAM
holds a word; the write pointer then equals the read pointer only when the RAM is full, and a
full FIFO takes no write, so a read never meets a write at its address.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .bram import bram, read_port

__all__ = ["BramFifo"]


class BramFifo(wiring.Component):
    """``depth`` words (>= 2) of ``width`` bits; ports as ``SyncFIFOBuffered`` (``w_data``,
    ``w_en``, ``w_rdy``, ``r_data``, ``r_en``, ``r_rdy``, ``level``)."""

    def __init__(self, *, width: int, depth: int):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth = {depth!r} must be an integer >= 2")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width = {width!r} must be an integer >= 1")
        self.width, self.depth = width, depth
        super().__init__({
            "w_data": In(width), "w_en": In(1), "w_rdy": Out(1),
            "r_data": Out(width), "r_en": In(1), "r_rdy": Out(1),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        inner = self.depth - 1
        m.submodules.storage = mem = bram(self.width, inner)
        wr = mem.write_port()
        rd = read_port(m, mem, wr, platform=platform, name="rd")

        produce = Signal(range(inner))
        consume = Signal(range(inner))
        inner_level = Signal(range(inner + 1))
        do_write = Signal()
        do_read = Signal()                  # RAM word -> output register

        def incr(ptr):
            return Mux(ptr == inner - 1, 0, ptr + 1)

        m.d.comb += [
            self.w_rdy.eq(inner_level != inner),
            do_write.eq(self.w_en & self.w_rdy),
            do_read.eq((inner_level != 0) & (~self.r_rdy | self.r_en)),
            wr.addr.eq(produce), wr.data.eq(self.w_data), wr.en.eq(do_write),
            rd.addr.eq(consume), rd.en.eq(do_read),
            self.r_data.eq(rd.data),
            self.level.eq(inner_level + self.r_rdy),
        ]
        with m.If(do_write):
            m.d.sync += produce.eq(incr(produce))
        with m.If(do_read):
            m.d.sync += [consume.eq(incr(consume)), self.r_rdy.eq(1)]
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        with m.If(do_write & ~do_read):
            m.d.sync += inner_level.eq(inner_level + 1)
        with m.Elif(do_read & ~do_write):
            m.d.sync += inner_level.eq(inner_level - 1)
        return m
