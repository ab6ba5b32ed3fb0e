"""Record packing, RecordFifo gateware vs RecordFifoModel (drops, gap flag, overflow)."""
import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from qkdlink.hdl.record_fifo import (
    GAP_BIT, RECORD_BITS, RecordFifo, RecordFifoModel, pack_record, pack_records, unpack_record,
    unpack_records,
)


def test_record_layout():
    assert RECORD_BITS == 64
    r = pack_record(slot=(1 << 48) - 1, basis=1, bit=0, fine=5, multi=1, gap=0)
    assert r == ((1 << 48) - 1) | (1 << 48) | (5 << 50) | (1 << 53)
    assert pack_record(0, 0, 0, 0, 0, 1) == 1 << 54
    assert pack_record(1 << 48, 0, 1, 0) == 1 << 49                        # slot mod 2**48
    assert unpack_record(r) == dict(slot=(1 << 48) - 1, basis=1, bit=0, fine=5, multi=1, gap=0)
    with pytest.raises(ValueError, match="fine"):
        pack_record(0, 0, 0, 8)
    rng = np.random.default_rng(1)
    n = 1000
    f = dict(slot=rng.integers(0, 1 << 48, n, dtype=np.uint64), basis=rng.integers(0, 2, n),
             bit=rng.integers(0, 2, n), fine=rng.integers(0, 8, n), multi=rng.integers(0, 2, n),
             gap=rng.integers(0, 2, n))
    packed = pack_records(**f)
    assert packed.dtype == np.uint64
    assert [int(x) for x in packed[:50]] == [
        pack_record(*(int(f[k][i]) for k in f)) for i in range(50)]
    back = unpack_records(packed)
    assert all((back[k] == f[k]).all() for k in f)


def _run(depth, n, p_write, p_ready, seed, clear_every=0):
    """Random write bursts and r.ready back-pressure; every cycle the gateware's outputs are
    checked against the model (level, overflow, dropped, r.valid timing, r.payload)."""
    rng = np.random.default_rng(seed)
    # bursty writes: a two-state Markov chain (bursts of ~8 writes)
    w_en = np.zeros(n, bool)
    on = False
    flips = rng.random(n)
    for i in range(n):
        on = (flips[i] < 1 / 8) != on
        w_en[i] = on and rng.random() < p_write
    ready = rng.random(n) < p_ready
    data = rng.integers(0, 1 << 54, n, dtype=np.uint64)        # gap bit 0 on input
    clear = np.zeros(n, bool)
    if clear_every:
        clear[clear_every::clear_every] = True
    dut = RecordFifo(depth)
    model = RecordFifoModel(depth)
    write_cycle = []            # write cycle of the records held by the model, oldest first
    pushed = []                 # (record, stored) of every write
    got_records = []
    errors = []

    async def tb(ctx):
        for t in range(n):
            ctx.set(dut.w_en, int(w_en[t]))
            ctx.set(dut.w_data, int(data[t]))
            ctx.set(dut.r.ready, int(ready[t]))
            ctx.set(dut.clear_overflow, int(clear[t]))
            valid = ctx.get(dut.r.valid)
            want_valid = bool(model.level) and write_cycle[0] <= t - RecordFifo.LATENCY
            got = (valid, ctx.get(dut.level), ctx.get(dut.overflow), ctx.get(dut.dropped))
            want = (int(want_valid), model.level, int(model.overflow),
                    int(w_en[t] and model.level == depth))
            if got != want:
                errors.append((t, got, want))
            if valid:
                payload = ctx.get(dut.r.payload)
                if payload != model.peek():
                    errors.append((t, "payload", hex(payload), hex(model.peek())))
            if clear[t]:
                model.clear_overflow()
            if w_en[t]:
                pushed.append((int(data[t]), model.push(int(data[t]))))
                if pushed[-1][1]:
                    write_cycle.append(t)
            if valid and ready[t]:
                got_records.append(model.pop())
                write_cycle.pop(0)
            await ctx.tick()
            if len(errors) > 5:
                return

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert not errors, errors[:5]
    return model, np.array(got_records, dtype=np.uint64), pushed


@pytest.mark.parametrize("depth, p_ready", [(1, 0.5), (2, 0.4), (16, 0.35), (16, 0.9), (64, 0.3)])
def test_fifo_matches_model(depth, p_ready):
    model, out, pushed = _run(depth, 2000, p_write=0.9, p_ready=p_ready, seed=depth + 7,
                              clear_every=97)
    if p_ready < 0.5:
        assert model.dropped > 20
    # independently of the model: the stored writes in order, gap on the first after a drop
    want, lost = [], False
    for rec, stored in pushed:
        if stored:
            want.append(rec | (int(lost) << GAP_BIT))
        lost = not stored
    assert len(out) > 100
    assert out.tolist() == want[:len(out)]
    assert model.dropped == sum(not s for _, s in pushed)


def test_fifo_gap_and_overflow_sequence():
    """Fill a depth-4 FIFO, drop 3, read one, write two: the first stored after the drops
    carries gap, overflow stays set until cleared."""
    m = RecordFifoModel(4)
    stored = m.push_many(np.arange(1, 8, dtype=np.uint64))
    assert stored.tolist() == [True] * 4 + [False] * 3
    assert (m.dropped, m.overflow, m.gap_pending, m.level) == (3, True, True, 4)
    assert m.pop() == 1
    assert m.push(8) and not m.push(9)
    assert m.pop_many().tolist() == [2, 3, 4, 8 | (1 << GAP_BIT)]
    assert m.gap_pending and m.dropped == 4
    assert m.push(10) and m.pop() == 10 | (1 << GAP_BIT)
    assert m.overflow
    m.clear_overflow()
    assert not m.overflow and m.pop() is None and m.peek() is None


def test_model_vectorised_matches_scalar():
    rng = np.random.default_rng(3)
    a, b = RecordFifoModel(37), RecordFifoModel(37)
    for _ in range(200):
        if rng.random() < 0.5:
            recs = rng.integers(0, 1 << 54, rng.integers(0, 30), dtype=np.uint64)
            mask = a.push_many(recs)
            assert mask.tolist() == [b.push(int(r)) for r in recs]
        else:
            k = int(rng.integers(0, 30))
            want = [x for x in (b.pop() for _ in range(k)) if x is not None]
            assert a.pop_many(k).tolist() == want
        assert (a.level, a.dropped, a.overflow, a.gap_pending) == (b.level, b.dropped, b.overflow,
                                                                    b.gap_pending)


def test_parameter_check():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="depth"):
            RecordFifo(0)
        gc.collect()
    with pytest.raises(ValueError, match="depth"):
        RecordFifoModel(2.5)
