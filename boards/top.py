"""Board top: clocking, the endpoint gateware, UART host link, I/O gearing and the QRNG input.

:class:`BoardTop` wraps :class:`qkdlink.gateware.alice.Alice` or
:class:`qkdlink.gateware.bob.Bob` for one :class:`~qkdlink.boards.platforms.Board`:

* clock: the board oscillator through a PLL (:mod:`qkdlink.boards.clocking`);
* host link: :class:`qkdlink.hdl.uart.UART` (8N1, ``baud``) on the board's USB-UART,
  connected to the top's ``rx``/``tx`` byte streams;
* Alice: laser, IM-code and sync words through :class:`qkdlink.hdl.gearing.OutputGearing`;
  the QRNG through :class:`QRNGSerialInput`;
* Bob: detector and sync words through :class:`qkdlink.hdl.gearing.InputGearing`.
"""
from __future__ import annotations

from amaranth.hdl import Cat, ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from ..hdl.gearing import InputGearing, OutputGearing
from ..hdl.uart import UART
from .clocking import ECP5Clocking, ICE40Clocking
from .platforms import Board, add_qkd_resources

__all__ = ["BoardTop", "QRNGSerialInput"]


class QRNGSerialInput(wiring.Component):
    """Bits from an external QRNG (``data`` sampled on each rising edge of ``strobe``, both
    through two-register synchronisers) packed LSB first into ``words`` of ``width`` bits.

    A full word waits on ``words`` until taken; bits arriving meanwhile are dropped and
    counted in ``dropped_bits`` (Alice's entropy stage counts the resulting underruns).
    """

    def __init__(self, width: int):
        self.width = width
        super().__init__({"data": In(1), "strobe": In(1), "words": Out(stream.Signature(width)),
                          "dropped_bits": Out(32)})

    def elaborate(self, platform):
        m = Module()
        data_s, strobe_s, strobe_prev = Signal(), Signal(), Signal()
        m.submodules.sync_data = FFSynchronizer(self.data, data_s)
        m.submodules.sync_strobe = FFSynchronizer(self.strobe, strobe_s)
        m.d.sync += strobe_prev.eq(strobe_s)
        edge = strobe_s & ~strobe_prev
        shreg = Signal(self.width)
        count = Signal(range(self.width + 1))
        full = count == self.width
        m.d.comb += [self.words.valid.eq(full), self.words.payload.eq(shreg)]
        with m.If(self.words.valid & self.words.ready):
            m.d.sync += count.eq(0)
        with m.If(edge):
            with m.If(full):
                m.d.sync += self.dropped_bits.eq(self.dropped_bits + 1)
            with m.Else():
                m.d.sync += [shreg.eq(Cat(shreg[1:], data_s)), count.eq(count + 1)]
        return m


class BoardTop(Elaboratable):
    """The whole design for ``board`` in ``role`` (``core`` is the Alice or Bob instance)."""

    def __init__(self, board: Board, role: str, core, *, clock_mhz: float, baud: int):
        if role not in ("alice", "bob"):
            raise ValueError(f"role {role!r}: must be 'alice' or 'bob'")
        self.board = board
        self.role = role
        self.core = core
        self.clock_mhz = clock_mhz
        self.baud = baud
        self.sync_mhz = None            # achieved PLL frequency, set in elaborate

    def _clocking(self, platform):
        b = self.board
        S = self.core.params.samples_per_clock
        if b.family == "ice40":
            return ICE40Clocking(platform.request(b.osc_resource, 0, dir="-"), b.osc_mhz, self.clock_mhz)
        self._osc = io.Buffer("i", platform.request(b.osc_resource, 0, dir="-"))
        return ECP5Clocking(self._osc.i, b.osc_mhz, self.clock_mhz, S)

    def elaborate(self, platform):
        m = Module()
        b, core = self.board, self.core
        p = core.params
        S, P = p.samples_per_clock, p.slots_per_clock
        add_qkd_resources(platform, b, self.role)
        m.submodules.clocking = clk = self._clocking(platform)
        if b.family == "ecp5":
            m.submodules.osc = self._osc
        m.domains.sync = ClockDomain("sync")
        if clk.geared:
            m.domains.eclk = ClockDomain("eclk", reset_less=True)
        self.sync_mhz = clk.sync_mhz
        m.submodules.core = core

        m.submodules.uart = uart = UART(clk.sync_mhz * 1e6, self.baud)
        pins = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        m.submodules.uart_rx = uart_rx = io.Buffer("i", pins.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", pins.tx)
        m.d.comb += [uart.rx_pin.eq(uart_rx.i), uart_tx.o.eq(uart.tx_pin)]
        wiring.connect(m, uart.rx, core.rx)
        wiring.connect(m, core.tx, uart.tx)

        def gear(cls, res, width):
            return cls(S, width, family=b.family, port=platform.request(res, 0, dir="-"))

        def pipelined(value, name):
            """``value`` delayed by the board's I/O register stages: the gearing primitives sit
            in the I/O ring, far from the endpoint logic, so the long route gets a clock of its
            own (a fixed latency, calibrated out with the delay registers like the gearing's)."""
            for k in range(b.io_pipeline_clocks):
                reg = Signal(len(value), name=f"{name}_pipe{k}")
                m.d.sync += reg.eq(value)
                value = reg
            return value

        if self.role == "alice":
            m.submodules.laser = laser = gear(OutputGearing, "qkd_laser", 4)
            m.submodules.sync_out = sync_out = gear(OutputGearing, "qkd_sync_out", 1)
            m.submodules.im = im = gear(OutputGearing, "qkd_im", 2)
            per_slot = S // P
            im_words = Cat(Cat(core.im_code[j // per_slot][bit] for j in range(S)) for bit in range(2))
            m.d.comb += [
                laser.o.eq(pipelined(core.laser.as_value(), "laser")),
                sync_out.o[0].eq(pipelined(core.sync, "sync_out")),
                im.o.eq(pipelined(im_words, "im")),
            ]
            m.submodules.qrng = qrng = QRNGSerialInput(len(core.qrng.payload))
            m.submodules.qrng_data = q_data = io.Buffer("i", platform.request("qkd_qrng_data", 0, dir="-"))
            m.submodules.qrng_strobe = q_strobe = io.Buffer("i", platform.request("qkd_qrng_strobe", 0, dir="-"))
            m.d.comb += [qrng.data.eq(q_data.i), qrng.strobe.eq(q_strobe.i)]
            wiring.connect(m, qrng.words, core.qrng)
        else:
            m.submodules.det = det = gear(InputGearing, "qkd_det", 4)
            m.submodules.sync_in = sync_in = gear(InputGearing, "qkd_sync_in", 1)
            m.d.comb += [core.det.eq(pipelined(det.i.as_value(), "det")),
                         core.sync_in.eq(pipelined(sync_in.i[0], "sync_in"))]
            if b.status_led:
                m.submodules.led = led = io.Buffer("o", platform.request(b.status_led, 0, dir="-"))
                m.d.comb += led.o.eq(core.running)
        return m
