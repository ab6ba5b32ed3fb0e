"""UART gateware vs UARTModel, cycle by cycle; line encoder/decoder; framing errors; bad rates."""
import numpy as np
import pytest
from amaranth.sim import Simulator

from qkdlink.hdl.uart import UART, UARTModel, decode_8n1, encode_8n1, uart_divisor


def _line_with_garbage(rng, clk_hz, baud, data, n_garbage):
    """8N1 frames of ``data`` with idle gaps, plus glitches and frames whose stop bit is low."""
    D = uart_divisor(clk_hz, baud)
    parts = [np.ones(3 * D, np.uint8)]
    for i, b in enumerate(data):
        parts.append(encode_8n1(bytes([b]), clk_hz, baud, gap_bits=int(rng.integers(0, 3))))
        parts.append(np.ones(int(rng.integers(0, D)), np.uint8))           # fractional-bit gap
        if i < n_garbage:
            kind = rng.integers(0, 2)
            if kind == 0:                                                  # short low glitch
                parts.append(np.zeros(int(rng.integers(1, D // 2 - 1)), np.uint8))
                parts.append(np.ones(2 * D, np.uint8))
            else:                                                          # low stop bit + break
                bad = encode_8n1(bytes([int(rng.integers(0, 256))]), clk_hz, baud)
                bad[9 * D:] = 0
                parts += [bad, np.zeros(int(rng.integers(0, 3 * D)), np.uint8), np.ones(2 * D, np.uint8)]
    parts.append(np.ones(12 * D, np.uint8))
    return np.concatenate(parts)


def _run(clk_hz, baud, seed, fifo_depth=4, n_rx=24, n_tx=12, n_garbage=6, p_ready=0.3):
    rng = np.random.default_rng(seed)
    rx_data = rng.integers(0, 256, n_rx).tolist()
    line = _line_with_garbage(rng, clk_hz, baud, rx_data, n_garbage)
    n = len(line)
    tx_data = rng.integers(0, 256, n_tx).tolist()
    tx_valid = rng.random(n) < 0.5
    rx_ready = rng.random(n) < p_ready
    dut = UART(clk_hz, baud, fifo_depth=fifo_depth)
    model = UARTModel(clk_hz, baud, fifo_depth=fifo_depth)
    errors, got_rx, tx_line = [], [], []

    async def bench(ctx):
        k = 0
        for t in range(n):
            valid = int(tx_valid[t] and k < n_tx)
            payload = tx_data[k] if k < n_tx else 0
            ctx.set(dut.rx_pin, int(line[t]))
            ctx.set(dut.tx.valid, valid)
            ctx.set(dut.tx.payload, payload)
            ctx.set(dut.rx.ready, int(rx_ready[t]))
            want = model.step(rx_pin=int(line[t]), tx_valid=valid, tx_payload=payload, rx_ready=int(rx_ready[t]))
            got = dict(tx_pin=ctx.get(dut.tx_pin), tx_ready=ctx.get(dut.tx.ready),
                       rx_valid=ctx.get(dut.rx.valid), framing_errors=ctx.get(dut.framing_errors),
                       rx_overflows=ctx.get(dut.rx_overflows))
            got["rx_payload"] = ctx.get(dut.rx.payload) if got["rx_valid"] else None
            if got != want and len(errors) < 5:
                errors.append((t, got, want))
            if got["rx_valid"] and rx_ready[t]:
                got_rx.append(got["rx_payload"])
            if valid and got["tx_ready"]:
                k += 1
            tx_line.append(got["tx_pin"])
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1 / clk_hz)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors
    return rx_data, got_rx, model, tx_data, np.array(tx_line, np.uint8)


@pytest.mark.parametrize("clk_hz,baud,seed", [(12e6, 1.5e6, 1), (48e6, 4e6, 2), (10e6, 1e6, 3)])
def test_uart_matches_model(clk_hz, baud, seed):
    rx_data, got_rx, model, tx_data, tx_line = _run(clk_hz, baud, seed)
    # garbage: every low-stop-bit frame is a framing error; glitches are ignored
    assert model.framing_errors > 0
    # bytes lost only to overflow (slow reader, small FIFO), never reordered or altered
    lost = model.rx_overflows
    assert len(got_rx) + lost == len(rx_data)
    if lost == 0:
        assert got_rx == rx_data
    # the tx line decodes to what was sent
    assert decode_8n1(tx_line, clk_hz, baud) == (bytes(tx_data), 0)


def test_uart_no_loss_with_ready_reader():
    rx_data, got_rx, model, _, _ = _run(12e6, 1e6, seed=7, fifo_depth=2, p_ready=1.0)
    assert got_rx == rx_data and model.rx_overflows == 0


def test_uart_overflow_counted():
    rx_data, got_rx, model, _, _ = _run(12e6, 2e6, seed=8, fifo_depth=2, n_rx=16, n_garbage=0, p_ready=0.0)
    assert got_rx == [] and model.rx_overflows == len(rx_data) - 2 and len(model.rx_fifo) == 2


def test_encode_decode_roundtrip():
    rng = np.random.default_rng(11)
    data = rng.integers(0, 256, 300).astype(np.uint8).tobytes()
    line = encode_8n1(data, 48e6, 3e6, gap_bits=1, lead_clocks=5)
    assert len(line) == 5 + 300 * 11 * 16
    assert decode_8n1(line, 48e6, 3e6) == (data, 0)
    # a receiver whose clock is 1 % off still decodes (sampling at mid-bit)
    for ratio in (1.01, 0.99):
        line = encode_8n1(data[:50], 48e6, 3e6, lead_clocks=3)
        resampled = line[np.floor(np.arange(int(len(line) * ratio)) / ratio).astype(int)]
        assert decode_8n1(resampled, 48e6, 3e6) == (data[:50], 0)


def test_framing_error_drops_byte():
    D = uart_divisor(12e6, 1e6)
    bad = encode_8n1(b"\x5a", 12e6, 1e6)
    bad[9 * D:] = 0                                   # low stop bit
    line = np.concatenate([bad, np.zeros(5 * D, np.uint8), np.ones(2 * D, np.uint8),
                           encode_8n1(b"ok", 12e6, 1e6)])
    assert decode_8n1(line, 12e6, 1e6) == (b"ok", 1)


@pytest.mark.parametrize("clk_hz,baud,match", [(12e6, 4e6, "need >= 4"), (12e6, 1.25e6, "% off"),
                                               (0, 1e6, "positive")])
def test_bad_rates(clk_hz, baud, match):
    with pytest.raises(ValueError, match=match):
        uart_divisor(clk_hz, baud)
    with pytest.raises(ValueError, match="fifo_depth"):
        UARTModel(12e6, 1e6, fifo_depth=1)
