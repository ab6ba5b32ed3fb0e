"""RecordRowFifo gateware vs RecordRowFifoModel, cycle by cycle (r.valid timing, payload,
level, dropped, overflow, gap), and the serialise_rows helper."""
import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from qkdlink.hdl.record_fifo import GAP_BIT
from qkdlink.hdl.record_rows import RecordRowFifo, RecordRowFifoModel, serialise_rows

LAT = RecordRowFifo.LATENCY


def _simulate(lanes, depth, records, mask, ready, clear):
    """Drive the FIFO with per-cycle (records (n, lanes), mask (n, lanes), ready, clear) and
    check every cycle against the model: r.valid (exact timing: the oldest held record's row
    was written ``<= t - LATENCY``), r.payload, level, overflow, dropped. Returns the model,
    the records read, and per row written (mask, dropped records)."""
    n = len(mask)
    dut = RecordRowFifo(lanes, depth)
    model = RecordRowFifoModel(lanes, depth)
    row_cycle = []              # write cycle of the rows held by the model, oldest first
    pushes = []                 # (row records, dropped) for every row with a non-zero mask
    got = []
    errors = []
    rec_in = [sum(int(records[t, i]) << (64 * i) for i in range(lanes)) for t in range(n)]
    mask_in = [sum(int(mask[t, i]) << i for i in range(lanes)) for t in range(n)]

    async def tb(ctx):
        for t in range(n):
            ctx.set(dut.w_records.as_value(), rec_in[t])
            ctx.set(dut.w_valid, mask_in[t])
            ctx.set(dut.r.ready, int(ready[t]))
            ctx.set(dut.clear_overflow, int(clear[t]))
            valid = ctx.get(dut.r.valid)
            want_valid = bool(model.level) and row_cycle[0] <= t - LAT
            n_in = int(mask[t].sum())
            got_t = (valid, ctx.get(dut.level), ctx.get(dut.overflow), ctx.get(dut.dropped))
            want_t = (int(want_valid), model.level, int(model.overflow),
                      n_in if model.level == depth else 0)
            if got_t != want_t:
                errors.append((t, "valid/level/overflow/dropped", got_t, want_t))
            if valid and ctx.get(dut.r.payload) != model.peek():
                errors.append((t, "payload", hex(ctx.get(dut.r.payload)), hex(model.peek())))
            if clear[t]:
                model.clear_overflow()
            level0 = model.level
            dropped = model.push_row(records[t], mask[t])
            if n_in:
                pushes.append((records[t][mask[t]].tolist(), dropped))
                if model.level > level0:
                    row_cycle.append(t)
            if valid and ready[t]:
                got.append(model.pop())
                if model.level < len(row_cycle):
                    row_cycle.pop(0)
            await ctx.tick()
            if len(errors) > 5:
                return

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert not errors, errors[:5]
    return model, got, pushes


def _traffic(rng, lanes, n, p_row, p_ready):
    """Bursty rows (two-state Markov chain, bursts of ~8 clocks), lane masks from sparse to
    full, random ready; records with gap bit 0."""
    on, flips = False, rng.random(n)
    rows = np.zeros(n, bool)
    for t in range(n):
        on = (flips[t] < 1 / 8) != on
        rows[t] = on and rng.random() < p_row
    density = rng.choice([0.3, 0.7, 1.0], size=n)
    mask = (rng.random((n, lanes)) < density[:, None]) & rows[:, None]
    records = rng.integers(0, 1 << 54, (n, lanes), dtype=np.uint64)
    ready = rng.random(n) < p_ready
    return records, mask, ready


def _expected(pushes):
    """Independently of the model: the stored rows' records in order, gap on the first record
    of the first row stored after a drop."""
    out, lost = [], False
    for recs, dropped in pushes:
        if not dropped:
            out += [recs[0] | (int(lost) << GAP_BIT), *recs[1:]]
        lost = bool(dropped)
    return out


@pytest.mark.parametrize("lanes", [1, 2, 4])
@pytest.mark.parametrize("depth", range(1, 17))
def test_fifo_matches_model(lanes, depth):
    rng = np.random.default_rng(100 * lanes + depth)
    n = 400
    # ready below the record rate for part of the run (overflow), then above it (drain)
    records, mask, ready = _traffic(rng, lanes, n, p_row=0.9, p_ready=0.1)
    ready[n // 2:] = rng.random(n - n // 2) < 0.9
    clear = np.zeros(n, bool)
    clear[::37] = True
    model, got, pushes = _simulate(lanes, depth, records, mask, ready, clear)
    assert model.dropped_rows > 0 and model.stored > 0
    want = _expected(pushes)
    assert len(got) > 30
    assert got == want[:len(got)]
    assert any(x >> GAP_BIT & 1 for x in got)
    assert model.dropped == sum(d for _, d in pushes)


@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_no_overflow_matches_serialise_rows(lanes):
    """Deep FIFO, always ready: no drops, and the output is serialise_rows of the input."""
    rng = np.random.default_rng(lanes)
    n = 300
    records, mask, _ = _traffic(rng, lanes, n, p_row=0.3, p_ready=1.0)
    ready = np.ones(n + 40, bool)
    pad = lambda a: np.concatenate([a, np.zeros((40, lanes), a.dtype)])
    model, got, _ = _simulate(lanes, 64, pad(records), pad(mask), ready,
                              np.zeros(n + 40, bool))
    assert model.dropped == 0 and model.level == 0
    assert got == serialise_rows(records, mask).tolist()


def test_timing_by_hand():
    """lanes = 4: a 2-record row into an empty FIFO is on r in cycles 3 and 4; back-to-back
    single-record rows stream at one record per clock; a full row then one more row stream
    without a bubble; with ready low the row waits, valid stays high."""
    L = 4
    recs = np.arange(1, 4 * 24 + 1, dtype=np.uint64).reshape(24, 4)
    mask = np.zeros((24, 4), bool)
    mask[0] = [0, 1, 0, 1]                              # cycle 0: lanes 1, 3
    mask[6:10, 2] = True                                # cycles 6..9: one record each
    mask[14] = True                                     # cycle 14: four records
    mask[15, 0] = True                                  # cycle 15: one record
    ready = np.ones(24, bool)
    ready[18:20] = False
    dut = RecordRowFifo(L, 4)
    trace = []

    async def tb(ctx):
        for t in range(24):
            ctx.set(dut.w_records.as_value(), sum(int(recs[t, i]) << (64 * i) for i in range(L)))
            ctx.set(dut.w_valid, sum(int(mask[t, i]) << i for i in range(L)))
            ctx.set(dut.r.ready, int(ready[t]))
            trace.append((ctx.get(dut.r.valid), ctx.get(dut.r.payload), ctx.get(dut.level)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    out = {t: int(p) for t, (v, p, _) in enumerate(trace) if v}
    assert out == {3: 2, 4: 4,                          # row of cycle 0
                   9: 27, 10: 31, 11: 35, 12: 39,       # rows of cycles 6..9, lane 2
                   17: 57, 18: 58, 19: 58, 20: 58,      # row of cycle 14 (ready low 18, 19)
                   21: 59, 22: 60, 23: 61}              # ... then the row of cycle 15
    assert [lv for _, _, lv in trace[:6]] == [0, 1, 1, 1, 1, 0]


def test_gap_and_overflow_by_hand():
    """Model: depth 2, lanes 2. Fill, drop two rows (3 records), read, store: the gap goes on
    the first record of the next stored row; overflow stays until cleared; a drop wins."""
    m = RecordRowFifoModel(2, 2)
    assert m.push_row([1, 2], 0b11) == 0 and m.push_row([3, 4], 0b10) == 0
    assert m.push_row([5, 6], 0) == 0                   # empty row: nothing
    assert m.push_row([5, 6], 0b11) == 2 and m.push_row([7, 8], [False, True]) == 1
    assert (m.level, m.dropped, m.dropped_rows, m.overflow, m.gap_pending) == (2, 3, 2, True,
                                                                               True)
    assert m.pop() == 1 and m.level == 2                # a row is held until its last record
    assert m.push_row([9, 10], 0b01) == 1
    assert m.pop() == 2 and m.level == 1
    assert m.push_row([11, 12], 0b10) == 0
    assert [m.pop() for _ in range(3)] == [4, 12 | (1 << GAP_BIT), None]
    assert m.overflow and not m.gap_pending and m.stored == 4
    m.clear_overflow()
    assert not m.overflow and m.peek() is None
    with pytest.raises(ValueError, match="mask"):
        m.push_row([1, 2], 4)
    with pytest.raises(ValueError, match="records"):
        m.push_row([1, 2, 3], 1)


def test_drop_wins_over_clear_and_gap_sequence():
    """Gateware, lanes 2, depth 1, ready low: the second row is dropped in the cycle overflow
    is cleared (drop wins), the row stored after the drain carries the gap on its lowest
    lane."""
    n = 14
    records = np.array([[10 * t + 1, 10 * t + 2] for t in range(n)], dtype=np.uint64)
    mask = np.zeros((n, 2), bool)
    mask[0] = True
    mask[2] = [False, True]                             # dropped (1 record), clear same cycle
    mask[3] = True                                      # dropped (2 records)
    mask[9] = [False, True]                             # stored with gap on lane 1
    ready = np.zeros(n, bool)
    ready[5:] = True
    clear = np.zeros(n, bool)
    clear[2] = True
    model, got, pushes = _simulate(2, 1, records, mask, ready, clear)
    assert [d for _, d in pushes] == [0, 1, 2, 0]
    assert got == [1, 2, 92 | (1 << GAP_BIT)]
    assert model.overflow


def test_serialise_rows():
    recs = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=np.uint64)
    mask = np.array([[0, 1, 1], [0, 0, 0], [1, 0, 1]], bool)
    assert serialise_rows(recs, mask).tolist() == [2, 3, 7, 9]
    assert RecordRowFifoModel.serialise_rows(recs, mask).dtype == np.uint64
    with pytest.raises(ValueError, match="lanes"):
        serialise_rows(recs, mask[:, :2])
    # the model agrees on a long run without overflow
    rng = np.random.default_rng(5)
    recs = rng.integers(0, 1 << 54, (2000, 4), dtype=np.uint64)
    mask = rng.random((2000, 4)) < 0.3
    m = RecordRowFifoModel(4, 4096)
    out = []
    for t in range(2000):
        m.push_row(recs[t], mask[t])
        if t % 3:
            out.append(m.pop())
    while m.level:
        out.append(m.pop())
    assert [x for x in out if x is not None] == serialise_rows(recs, mask).tolist()


def test_parameter_checks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        for bad in [(0, 4), (2, 0), (2, 2.5), (True, 4)]:
            with pytest.raises(ValueError, match="lanes|depth_rows"):
                RecordRowFifo(*bad)
            with pytest.raises(ValueError, match="lanes|depth_rows"):
                RecordRowFifoModel(*bad)
        f = RecordRowFifo(4, 16)
        assert (len(f.w_valid), len(f.dropped), len(f.level), len(f.r.payload)) == (4, 3, 5, 64)
        del f
        gc.collect()
