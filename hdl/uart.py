"""UART PHY (8N1) between the host-link byte streams and two pins, with its bit-exact model.

``UART(clk_hz, baud)`` adapts the ``rx``/``tx`` byte streams of an endpoint top
(``stream.Signature(8)``) to a serial line:

========================  ====================  =============================================
port                      direction             meaning
========================  ====================  =============================================
``rx_pin``                ``In(1)``, init 1     serial input (idle high)
``tx_pin``                ``Out(1)``, init 1    serial output (idle high), a register
``rx``                    ``Out(stream(8))``    received bytes, oldest first
``tx``                    ``In(stream(8))``     bytes to send
``framing_errors``        ``Out(16)``           bytes dropped for a low stop bit (wraps)
``rx_overflows``          ``Out(16)``           bytes dropped because the rx FIFO was full
========================  ====================  =============================================

One bit lasts ``divisor = round(clk_hz / baud)`` clocks; the build fails when that rate is
more than 2 % off ``baud`` (a receiver sampling mid-bit then drifts at most 19 % of a bit by
the stop bit) or ``divisor < 4``.

Receiver, per clock: ``rx_pin`` passes a two-register synchroniser (value ``s``, 2 clocks
late). In IDLE a low ``s`` starts a frame; ``divisor // 2`` clocks later the start bit is
sampled again (high: a glitch, back to IDLE); then each of the 8 data bits (LSB first) and
the stop bit are sampled ``divisor`` clocks apart. A high stop bit stores the byte in the rx
FIFO (or counts an overflow when it is full); a low stop bit drops the byte, counts a framing
error and waits for the line to go high (a break or garbage). The framed host-link protocol
above (CRC, resynchronisation, ``docs/hostlink.md``) recovers from dropped or corrupted bytes.

Transmitter, per clock: when the previous frame's stop bit has lasted ``divisor`` clocks (or
the line is idle) and the tx FIFO holds a byte, that byte is taken and the start bit begins on
the next clock; start, 8 data bits LSB first and the stop bit each last ``divisor`` clocks,
back to back while bytes are queued.

FIFOs: both directions buffer ``fifo_depth`` bytes in a :class:`~qkdlink.hdl.fifo.BramFifo`
(clock for clock an :class:`amaranth.lib.fifo.SyncFIFOBuffered`: block RAM with a registered
output, without the iCE40 read-first emulation; a byte written
in cycle ``c`` into an empty FIFO can be read in cycle ``c + 2``; ``fifo_depth - 1`` bytes in
the RAM plus one in the output register). Block RAM instead of a register file keeps the read
path short on the iCE40 (a 16-entry register-file multiplexer limited a 48 MHz build).

:class:`UARTModel` reproduces every output of the gateware in every clock cycle;
:func:`encode_8n1` and :func:`decode_8n1` are the line-level helpers a pseudo-terminal bridge
needs (bytes -> per-clock pin levels and back).
"""
from __future__ import annotations

from collections import deque

import numpy as np
from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .fifo import BramFifo

__all__ = ["UART", "UARTModel", "uart_divisor", "encode_8n1", "decode_8n1", "MAX_BAUD_ERROR"]

#: Largest accepted relative error of the achieved baud rate.
MAX_BAUD_ERROR = 0.02
_COUNTER_BITS = 16

_IDLE, _START, _DATA, _STOP, _BREAK = range(5)


def uart_divisor(clk_hz: float, baud: float) -> int:
    """Clocks per bit, ``round(clk_hz / baud)``; ``ValueError`` when the rate is unusable."""
    if not (clk_hz > 0 and baud > 0):
        raise ValueError(f"UART clk_hz = {clk_hz!r}, baud = {baud!r}: both must be positive")
    divisor = int(round(clk_hz / baud))
    if divisor < 4:
        raise ValueError(f"UART baud = {baud:g} at clk_hz = {clk_hz:g}: {clk_hz / baud:.3g} clocks per bit, "
                         f"need >= 4 (baud <= {clk_hz / 4:g})")
    error = abs(clk_hz / divisor / baud - 1)
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"UART baud = {baud:g} at clk_hz = {clk_hz:g}: divisor {divisor} gives "
                         f"{clk_hz / divisor:.6g} baud, {100 * error:.2f} % off (max {100 * MAX_BAUD_ERROR:g} %)")
    return divisor


def _check_depth(fifo_depth: int) -> int:
    if not isinstance(fifo_depth, int) or fifo_depth < 2:
        raise ValueError(f"UART fifo_depth = {fifo_depth!r}: must be an integer >= 2")
    return fifo_depth


class UART(wiring.Component):
    """8N1 UART with rx/tx byte FIFOs; see the module docstring for the exact behaviour."""

    def __init__(self, clk_hz: float, baud: float, *, fifo_depth: int = 16):
        self.clk_hz = clk_hz
        self.baud = baud
        self.divisor = uart_divisor(clk_hz, baud)
        self.fifo_depth = _check_depth(fifo_depth)
        super().__init__({
            "rx_pin": In(1, init=1),
            "tx_pin": Out(1, init=1),
            "rx": Out(stream.Signature(8)),
            "tx": In(stream.Signature(8)),
            "framing_errors": Out(_COUNTER_BITS),
            "rx_overflows": Out(_COUNTER_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        D = self.divisor
        m.submodules.rx_fifo = rx_fifo = BramFifo(width=8, depth=self.fifo_depth)
        m.submodules.tx_fifo = tx_fifo = BramFifo(width=8, depth=self.fifo_depth)

        # ---- receiver ----
        sync1 = Signal(init=1)
        s = Signal(init=1)
        m.d.sync += [sync1.eq(self.rx_pin), s.eq(sync1)]
        rx_state = Signal(range(5), init=_IDLE)
        rx_count = Signal(range(D))
        rx_bits = Signal(range(8))
        rx_shreg = Signal(8)
        m.d.comb += [
            rx_fifo.w_data.eq(rx_shreg),
            self.rx.valid.eq(rx_fifo.r_rdy),
            self.rx.payload.eq(rx_fifo.r_data),
            rx_fifo.r_en.eq(self.rx.ready),
        ]
        with m.Switch(rx_state):
            with m.Case(_IDLE):
                with m.If(~s):
                    m.d.sync += [rx_state.eq(_START), rx_count.eq(D // 2 - 1)]
            with m.Case(_START):
                with m.If(rx_count != 0):
                    m.d.sync += rx_count.eq(rx_count - 1)
                with m.Elif(s):
                    m.d.sync += rx_state.eq(_IDLE)
                with m.Else():
                    m.d.sync += [rx_state.eq(_DATA), rx_count.eq(D - 1), rx_bits.eq(0)]
            with m.Case(_DATA):
                with m.If(rx_count != 0):
                    m.d.sync += rx_count.eq(rx_count - 1)
                with m.Else():
                    m.d.sync += [rx_shreg.eq(Cat(rx_shreg[1:], s)), rx_bits.eq(rx_bits + 1),
                                 rx_count.eq(D - 1)]
                    with m.If(rx_bits == 7):
                        m.d.sync += rx_state.eq(_STOP)
            with m.Case(_STOP):
                with m.If(rx_count != 0):
                    m.d.sync += rx_count.eq(rx_count - 1)
                with m.Elif(s):
                    m.d.sync += rx_state.eq(_IDLE)
                    m.d.comb += rx_fifo.w_en.eq(1)
                    with m.If(~rx_fifo.w_rdy):
                        m.d.sync += self.rx_overflows.eq(self.rx_overflows + 1)
                with m.Else():
                    m.d.sync += [rx_state.eq(_BREAK), self.framing_errors.eq(self.framing_errors + 1)]
            with m.Case(_BREAK):
                with m.If(s):
                    m.d.sync += rx_state.eq(_IDLE)

        # ---- transmitter ----
        tx_count = Signal(range(D))
        tx_left = Signal(range(10))
        tx_shreg = Signal(9)
        m.d.comb += [
            tx_fifo.w_data.eq(self.tx.payload),
            tx_fifo.w_en.eq(self.tx.valid),
            self.tx.ready.eq(tx_fifo.w_rdy),
        ]
        with m.If(tx_count != 0):
            m.d.sync += tx_count.eq(tx_count - 1)
        with m.Elif(tx_left != 0):
            m.d.sync += [self.tx_pin.eq(tx_shreg[0]), tx_shreg.eq(tx_shreg >> 1),
                         tx_left.eq(tx_left - 1), tx_count.eq(D - 1)]
        with m.Elif(tx_fifo.r_rdy):
            m.d.comb += tx_fifo.r_en.eq(1)
            m.d.sync += [self.tx_pin.eq(0), tx_shreg.eq(Cat(tx_fifo.r_data, 1)), tx_left.eq(9),
                         tx_count.eq(D - 1)]
        return m


class _FifoModel:
    """Cycle model of :class:`~qkdlink.hdl.fifo.BramFifo` (depth >= 2)."""

    def __init__(self, depth: int):
        self.inner_depth = depth - 1
        self.inner: deque[int] = deque()
        self.out_valid = 0
        self.out_data = 0

    @property
    def w_rdy(self) -> int:
        return int(len(self.inner) != self.inner_depth)

    @property
    def r_rdy(self) -> int:
        return self.out_valid

    def __len__(self) -> int:
        return len(self.inner) + self.out_valid

    def contents(self) -> list[int]:
        return ([self.out_data] if self.out_valid else []) + list(self.inner)

    def step(self, w_en: int, w_data: int, r_en: int) -> None:
        """The clock edge, with this cycle's ``w_en``/``w_data``/``r_en``."""
        do_write = w_en and self.w_rdy
        do_inner_read = bool(self.inner) and (not self.out_valid or r_en)
        if do_inner_read:
            self.out_data = self.inner.popleft()
            self.out_valid = 1
        elif r_en:
            self.out_valid = 0
        if do_write:
            self.inner.append(int(w_data) & 0xFF)


class UARTModel:
    """Cycle-exact model of :class:`UART`.

    Call :meth:`step` once per clock with that cycle's inputs; it returns that cycle's outputs
    (the values the gateware shows before the clock edge) and then advances the state.
    """

    def __init__(self, clk_hz: float, baud: float, *, fifo_depth: int = 16):
        self.divisor = uart_divisor(clk_hz, baud)
        self.fifo_depth = _check_depth(fifo_depth)
        self.sync1 = self.s = 1
        self.rx_state, self.rx_count, self.rx_bits, self.rx_shreg = _IDLE, 0, 0, 0
        self.rx_fifo = _FifoModel(self.fifo_depth)
        self.tx_fifo = _FifoModel(self.fifo_depth)
        self.tx_pin, self.tx_count, self.tx_left, self.tx_shreg = 1, 0, 0, 0
        self.framing_errors = 0
        self.rx_overflows = 0

    def step(self, rx_pin: int = 1, tx_valid: int = 0, tx_payload: int = 0, rx_ready: int = 0) -> dict:
        """One clock. Returns ``tx_pin, tx_ready, rx_valid, rx_payload, framing_errors,
        rx_overflows`` as seen during the cycle (``rx_payload`` is None when not valid)."""
        D, M = self.divisor, (1 << _COUNTER_BITS) - 1
        out = dict(tx_pin=self.tx_pin, tx_ready=self.tx_fifo.w_rdy, rx_valid=self.rx_fifo.r_rdy,
                   rx_payload=self.rx_fifo.out_data if self.rx_fifo.r_rdy else None,
                   framing_errors=self.framing_errors, rx_overflows=self.rx_overflows)
        # receiver (state before the edge)
        s = self.s
        rx_push = None
        st = self.rx_state
        if st == _IDLE:
            if not s:
                self.rx_state, self.rx_count = _START, D // 2 - 1
        elif st == _START:
            if self.rx_count:
                self.rx_count -= 1
            elif s:
                self.rx_state = _IDLE
            else:
                self.rx_state, self.rx_count, self.rx_bits = _DATA, D - 1, 0
        elif st == _DATA:
            if self.rx_count:
                self.rx_count -= 1
            else:
                self.rx_shreg = (self.rx_shreg >> 1) | (s << 7)
                if self.rx_bits == 7:
                    self.rx_state = _STOP
                self.rx_bits = (self.rx_bits + 1) & 7
                self.rx_count = D - 1
        elif st == _STOP:
            if self.rx_count:
                self.rx_count -= 1
            elif s:
                self.rx_state = _IDLE
                rx_push = self.rx_shreg
                if not self.rx_fifo.w_rdy:
                    self.rx_overflows = (self.rx_overflows + 1) & M
            else:
                self.rx_state = _BREAK
                self.framing_errors = (self.framing_errors + 1) & M
        elif s:
            self.rx_state = _IDLE
        rx_pop = out["rx_valid"] and rx_ready
        # transmitter
        tx_pop = False
        if self.tx_count:
            self.tx_count -= 1
        elif self.tx_left:
            self.tx_pin = self.tx_shreg & 1
            self.tx_shreg >>= 1
            self.tx_left -= 1
            self.tx_count = D - 1
        elif self.tx_fifo.r_rdy:
            tx_pop = True
            self.tx_pin = 0
            self.tx_shreg = self.tx_fifo.out_data | 0x100
            self.tx_left = 9
            self.tx_count = D - 1
        tx_push = out["tx_ready"] and tx_valid
        # FIFO updates and the synchroniser
        self.rx_fifo.step(rx_push is not None, rx_push or 0, rx_pop)
        self.tx_fifo.step(tx_push, tx_payload, tx_pop)
        self.s, self.sync1 = self.sync1, int(rx_pin) & 1
        return out


def encode_8n1(data: bytes, clk_hz: float, baud: float, *, gap_bits: int = 0, lead_clocks: int = 0) -> np.ndarray:
    """Per-clock line levels (``np.uint8``) of ``data`` sent as 8N1 frames at ``baud``.

    ``lead_clocks`` idle (high) clocks come first; ``gap_bits`` idle bit times follow each
    frame. A bit lasts :func:`uart_divisor` clocks, as in :class:`UART`'s transmitter.
    """
    D = uart_divisor(clk_hz, baud)
    frame = np.empty((len(data), 10 + gap_bits), np.uint8)
    b = np.frombuffer(bytes(data), np.uint8)
    frame[:, 0] = 0
    frame[:, 1:9] = (b[:, None] >> np.arange(8)) & 1
    frame[:, 9:] = 1
    return np.concatenate([np.ones(lead_clocks, np.uint8), np.repeat(frame.reshape(-1), D)])


def decode_8n1(levels, clk_hz: float, baud: float) -> tuple[bytes, int]:
    """``(bytes, framing_errors)`` that :class:`UART`'s receiver takes from per-clock line
    ``levels`` (the rx FIFO drained every clock, so nothing overflows)."""
    model = UARTModel(clk_hz, baud, fifo_depth=2)
    got = bytearray()
    for level in np.asarray(levels, np.uint8).tolist() + [1, 1]:
        o = model.step(rx_pin=level, rx_ready=1)
        if o["rx_valid"]:
            got.append(o["rx_payload"])
    got.extend(model.rx_fifo.contents())
    return bytes(got), model.framing_errors
