"""I/O gearing: the geared simulation model vs the generic S = 1 path and the Python models;
the vendor variants' primitive structure (bitstream builds in tests/boards check legality)."""
import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import Fragment, Instance, IOPort, UnusedElaboratable
from amaranth.lib import io
from amaranth.sim import Simulator

from qkdlink.hdl.gearing import InputGearing, OutputGearing, deserialize_model, serialize_model

PERIOD_S = 1e-7


def _sim(dut, S, fast_samples):
    """Simulator with `sync` at PERIOD_S and (S > 1) `fast` at PERIOD_S / S, rising edges aligned."""
    sim = Simulator(dut)
    sim.add_clock(PERIOD_S, domain="sync", phase=PERIOD_S / 2)
    if S > 1 and fast_samples:
        sim.add_clock(PERIOD_S / S, domain="fast", phase=PERIOD_S / 2)
    return sim


def _run_output(S, W, words):
    """Pin levels per fast cycle of OutputGearing(S, W) driven with words[k] in sync cycle k."""
    dut = OutputGearing(S, W)
    n = len(words)
    pins = []

    async def drive(ctx):
        for k in range(n):                       # word k in sync cycle k (after sync edge k)
            await ctx.tick("sync")
            for c in range(W):
                ctx.set(dut.o[c], int(words[k, c]))

    async def watch(ctx):
        for _ in range(S * (n + 1)):            # pins in fast cycle m (after fast edge m)
            await ctx.tick("fast" if S > 1 else "sync")
            pins.append(ctx.get(dut.pins))

    sim = _sim(dut, S, True)
    sim.add_testbench(drive)
    sim.add_testbench(watch)
    sim.run()
    return ((np.array(pins)[:, None] >> np.arange(W)) & 1).astype(np.uint8)


def _run_input(S, W, levels):
    """Words per sync cycle of InputGearing(S, W) with pin levels[m] in fast cycle m."""
    dut = InputGearing(S, W)
    n = len(levels) // S
    words = []

    async def drive(ctx):
        for m in range(len(levels)):
            await ctx.tick("fast" if S > 1 else "sync")
            ctx.set(dut.pins, int(sum(int(levels[m, c]) << c for c in range(W))))

    async def watch(ctx):
        for _ in range(n + 1):
            await ctx.tick("sync")
            words.append([ctx.get(dut.i[c]) for c in range(W)])

    sim = _sim(dut, S, True)
    sim.add_testbench(drive)
    sim.add_testbench(watch)
    sim.run()
    return np.array(words, np.int64)


def test_models_roundtrip():
    rng = np.random.default_rng(5)
    for S in (1, 2, 4, 8):
        words = rng.integers(0, 1 << S, (50, 3))
        pins = serialize_model(words, S, latency_clocks=2)
        assert pins.shape == (S * 52, 3) and not pins[:2 * S].any()
        back = deserialize_model(pins[2 * S:], S, latency_clocks=0)
        assert (back == words).all()
        assert (pins[2 * S: 3 * S, 1] == (words[0, 1] >> np.arange(S)) & 1).all()   # sample 0 first


@pytest.mark.parametrize("S,W,seed", [(2, 4, 1), (4, 4, 2), (4, 1, 3), (8, 2, 4)])
def test_output_gearing_vs_generic_path(S, W, seed):
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 1 << S, (40, W))
    geared = _run_output(S, W, words)
    assert (geared == serialize_model(words, S, 1)[:len(geared)]).all()
    # the generic path: S = 1 at S times the clock, fed the samples one per clock
    samples = deserialize_model(serialize_model(words, S, 0), 1, 0)
    generic = _run_output(1, W, samples)
    # same waveform; the generic register has 1 fast clock of latency, the geared one S
    assert (geared[S:] == generic[1:len(geared) - S + 1]).all()


@pytest.mark.parametrize("S,W,seed", [(2, 4, 6), (4, 4, 7), (4, 1, 8)])
def test_input_gearing_vs_generic_path(S, W, seed):
    rng = np.random.default_rng(seed)
    levels = (rng.random((S * 40, W)) < 0.3).astype(np.uint8)
    words = _run_input(S, W, levels)
    want = deserialize_model(levels, S, 1)
    assert (words == want[:len(words)]).all()
    generic = _run_input(1, W, levels)                  # one sample per clock, latency 1
    assert (generic[1:, :] == levels[:len(generic) - 1]).all()
    assert (deserialize_model(generic[1:], S, 1)[:len(words)] == words).all()


def _instances(fragment, kind):
    found = []
    for sub, _name, _src in fragment.subfragments:
        if isinstance(sub, Instance) and sub.type == kind:
            found.append(sub)
        elif isinstance(sub, Fragment):
            found += _instances(sub, kind)
    return found


def test_ecp5_x2_structure():
    port = io.SingleEndedPort(IOPort(3, name="pins"))
    out = OutputGearing(4, 3, family="ecp5", port=port)
    frag = Fragment.get(out, None)
    oddr = _instances(frag, "ODDRX2F")
    assert len(oddr) == 3 and len(_instances(frag, "OB")) == 3
    # D0 (first in time) is sample 0 of each pin's word
    d0 = oddr[1].ports["D0"][0]
    assert repr(d0) == repr(out.o[1][0])
    inp = InputGearing(4, 2, family="ecp5", port=io.SingleEndedPort(IOPort(2, name="ins")))
    frag = Fragment.get(inp, None)
    assert len(_instances(frag, "IDDRX2F")) == 2 and len(_instances(frag, "IB")) == 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(samples_per_clock=4, width=1, family="ice40"), "must be one of"),
    (dict(samples_per_clock=3, width=1), "must be one of"),
    (dict(samples_per_clock=2, width=1, family="xilinx"), "family"),
    (dict(samples_per_clock=2, width=1, family="ice40"), "port"),
    (dict(samples_per_clock=2, width=0), "width"),
])
def test_bad_parameters(kwargs, match):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)     # the half-built object
        with pytest.raises(ValueError, match=match):
            OutputGearing(**kwargs)
        gc.collect()
