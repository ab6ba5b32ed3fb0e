"""ChoiceMemory gateware vs ChoiceMemoryModel: window edges, back-pressure, clear, lost pulses."""
import gc
import time
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from qkdlink.hdl.choice_memory import (
    STATUS_FUTURE, STATUS_LOST, STATUS_OK, ChoiceMemory, ChoiceMemoryModel,
)

TOP = 1 << 48


def _pick_query(rng, end, D, P):
    """A query slot, mostly on or near the edges of the OK window [end - D + P, end)."""
    lo = end - D + P
    kind = rng.integers(0, 10)
    if kind == 0:
        q = end - 1
    elif kind == 1:
        q = end
    elif kind == 2:
        q = lo
    elif kind == 3:
        q = lo - 1
    elif kind == 4:
        q = int(rng.integers(lo, end)) if end > lo else end
    elif kind == 5:
        q = lo - int(rng.integers(1, 4 * D))
    elif kind == 6:
        q = end + int(rng.integers(1, 4 * D))
    elif kind == 7:
        q = int(rng.integers(0, TOP))
    elif kind == 8:
        q = int(rng.choice([0, TOP - 1, P - 1, P]))
    else:
        q = int(rng.integers(lo - P, end + P))
    return q % TOP


def _run(P, depth, n, seed):
    rng = np.random.default_rng(seed)
    dut = ChoiceMemory(P, depth)
    model = ChoiceMemoryModel(P, depth)
    errors = []
    counts = {STATUS_OK: 0, STATUS_LOST: 0, STATUS_FUTURE: 0}
    lost_pulses = [0]

    async def tb(ctx):
        counter = 0                        # the transmitter's slot counter
        pending = None                     # query slot held valid until accepted
        expected = []                      # answers in flight (slot, symbol, status)
        lost_next = 0                      # lost pulse expected in this cycle
        ready_left, ans_ready = 0, True    # answer.ready in runs of 1..5 cycles
        rows = depth // P
        jump = n // 3
        for t in range(n):
            # phases: writes paused for a while, a jump of the counter, a clear with a write
            # in the same cycle, a clear alone
            if t == jump:
                # jump near 2**48 (the counter then wraps), and in the same cycle query a slot
                # in the OK window whose row is being written: the answer is the old data
                counter = TOP - 6 * depth
                end = model.written_end
                if (counter // P) % rows == (end // P) % rows:
                    counter += P
                pending = next(q for q in range(end - 1, end - depth, -1)
                               if (q // P) % rows == (counter // P) % rows)
                assert model.query(pending)[1] == STATUS_OK
            clear = t in (n // 2, 2 * n // 3)
            write = (rng.random() < 0.7) and not (n // 4 <= t < n // 4 + 3 * depth // P)
            if t == jump:
                write = True
            if t == n // 2:
                write = True
            if t == 2 * n // 3:
                write = False
            codes = rng.integers(0, 16, size=P)
            if t == jump:                  # make the overwrite visible
                codes = (model.mem[(counter // P) % rows] + 1) % 16
            if pending is None and rng.random() < 0.7 and not jump - 4 <= t < jump:
                pending = _pick_query(rng, model.written_end, depth, P)
            if ready_left == 0:
                ready_left, ans_ready = int(rng.integers(1, 6)), bool(rng.random() < 0.6)
            ready_left -= 1
            if jump - 4 <= t <= jump:
                ans_ready = True

            ctx.set(dut.write, int(write))
            ctx.set(dut.slot_base, counter)
            ctx.set(dut.symbols, int(sum(int(c) << (4 * p) for p, c in enumerate(codes))))
            ctx.set(dut.clear, int(clear))
            ctx.set(dut.query.valid, int(pending is not None))
            ctx.set(dut.query.payload, pending or 0)
            ctx.set(dut.answer.ready, int(ans_ready))

            if ctx.get(dut.lost) != lost_next:
                errors.append((t, "lost", ctx.get(dut.lost), lost_next))
            lost_pulses[0] += ctx.get(dut.lost)
            lost_next = 0
            if ctx.get(dut.answer.valid) and ans_ready:
                ans = ctx.get(dut.answer.payload)
                got = (int(ans.slot), int(ans.symbol), int(ans.status))
                want = expected.pop(0) if expected else None
                if got != want:
                    errors.append((t, "answer", got, want))
            if pending is not None and ctx.get(dut.query.ready):
                sym, status = model.query(pending)              # before this cycle's write
                expected.append((pending, sym, status))
                counts[status] += 1
                lost_next = int(status == STATUS_LOST)
                pending = None
            if len(expected) > 1:
                errors.append((t, "more than one answer in flight", len(expected)))
            if write:
                model.write(counter, codes)
                counter = (counter + P) % TOP
            if clear:
                model.clear()
                counter = 0
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return errors, counts, lost_pulses[0]


@pytest.mark.parametrize("P", [1, 2, 4])
@pytest.mark.parametrize("depth_per_lane", [2, 8])
def test_memory_matches_model(P, depth_per_lane):
    depth = depth_per_lane * P
    errors, counts, lost = _run(P, depth, 1500, seed=P * 100 + depth_per_lane)
    assert not errors, errors[:5]
    assert min(counts.values()) > 20, counts            # every status exercised
    assert lost == counts[STATUS_LOST] or lost == counts[STATUS_LOST] - 1   # last may be in flight


def test_model_window_by_hand():
    m = ChoiceMemoryModel(2, 8)                          # 4 rows of 2 slots
    assert m.query(0) == (0, STATUS_FUTURE)
    m.write_many(np.arange(0, 20, 2), np.arange(20).reshape(10, 2) % 16)
    assert m.written_end == 20
    # OK window: [20 - 8 + 2, 20) = [14, 20)
    assert m.query(13) == (0, STATUS_LOST)
    assert m.query(14) == (14, STATUS_OK)
    assert m.query(19) == (3, STATUS_OK)
    assert m.query(20) == (0, STATUS_FUTURE)
    # row of slots 12, 13 is still stored (the write of 20, 21 will overwrite it) but LOST
    assert m.mem[(12 // 2) % 4].tolist() == [12, 13]
    m.clear()
    assert m.written_end == 0 and m.query(14) == (0, STATUS_FUTURE)
    m.write(0, [5, 6])
    assert m.query(1) == (6, STATUS_OK) and m.query(2) == (0, STATUS_FUTURE)
    # lower bound negative early on: everything below written_end is OK
    sym, st = m.query_many(np.array([0, 1, 2, TOP - 1], dtype=np.uint64))
    assert sym.tolist() == [5, 6, 0, 0] and st.tolist() == [STATUS_OK, STATUS_OK, STATUS_FUTURE, STATUS_FUTURE]


def test_model_batch_equals_sequential():
    rng = np.random.default_rng(4)
    P, depth = 4, 32
    bases = (np.cumsum(rng.integers(1, 3, size=500)) * P).astype(np.uint64)   # gaps and repeats
    bases[100:110] = bases[100]                                               # same slot, rewritten
    codes = rng.integers(0, 16, size=(500, P), dtype=np.uint8)
    a, b = ChoiceMemoryModel(P, depth), ChoiceMemoryModel(P, depth)
    a.write_many(bases, codes)
    for sb, c in zip(bases, codes):
        b.write(int(sb), c)
    assert a.written_end == b.written_end
    assert (a.mem == b.mem).all()
    qs = rng.integers(0, a.written_end + 50, size=300).astype(np.uint64)
    sym, st = a.query_many(qs)
    assert [(int(s), int(x)) for s, x in zip(sym, st)] == [b.query(int(q)) for q in qs]


def test_parameter_checks():
    for P, depth in [(1, 1), (2, 3), (4, 4), (2, 12), (3, 12)]:
        with pytest.raises(ValueError):
            ChoiceMemoryModel(P, depth)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnusedElaboratable)   # the half-built component
            with pytest.raises(ValueError):
                ChoiceMemory(P, depth)
            gc.collect()
    ChoiceMemoryModel(1, 2)
    with pytest.raises(ValueError, match="multiples of P"):
        ChoiceMemoryModel(2, 8).write(3, [0, 0])


def test_model_speed():
    rng = np.random.default_rng(8)
    n, P, depth = 1_000_000, 4, 1 << 16
    m = ChoiceMemoryModel(P, depth)
    bases = np.arange(n, dtype=np.uint64) * np.uint64(P)
    codes = rng.integers(0, 16, size=(n, P), dtype=np.uint8)
    qs = rng.integers(n * P - 2 * depth, n * P + 100, size=n).astype(np.uint64)
    t0 = time.perf_counter()
    m.write_many(bases, codes)
    sym, st = m.query_many(qs)
    assert time.perf_counter() - t0 < 1.0
    ok = st == STATUS_OK
    assert (sym[ok] == codes.ravel()[qs[ok].astype(np.int64)]).all()
    assert ok.any() and (st == STATUS_LOST).any() and (st == STATUS_FUTURE).any()
