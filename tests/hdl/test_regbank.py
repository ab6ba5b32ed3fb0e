"""RegisterBank(ALICE_REGISTERS) under amaranth.sim: RW / RO / STROBE semantics, errors, resets."""
import gc
import random

import pytest
from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.back import rtlil
from amaranth.sim import Simulator

from qkdlink.gateware.regmap import (
    ACCESS_RO, ACCESS_RW, ACCESS_STROBE, ALICE_REGISTERS, Register, RegisterMap,
)
from qkdlink.hdl.hostlink import LINK_COUNTER_REGISTERS, HostLink
from qkdlink.hdl.regbank import RegisterBank, RegisterBusSignature

R = ALICE_REGISTERS
UNMAPPED = [a for a in (0x0004, 0x0013, 0x0030, 0x0058, 0x0069, 0x1000, 0xFFFF) if R.at(a) is None]


def simulate(bank, testbench, top=None):
    sim = Simulator(top if top is not None else bank)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


async def bus_write(ctx, bus, addr, value):
    """One write request; returns err (valid in the next cycle)."""
    ctx.set(bus.addr, addr)
    ctx.set(bus.w_data, value)
    ctx.set(bus.w_en, 1)
    await ctx.tick()
    ctx.set(bus.w_en, 0)
    err = ctx.get(bus.err)
    await ctx.tick()
    return err


async def bus_read(ctx, bus, addr):
    """One read request; returns (r_data, err)."""
    ctx.set(bus.addr, addr)
    ctx.set(bus.r_en, 1)
    await ctx.tick()
    ctx.set(bus.r_en, 0)
    result = ctx.get(bus.r_data), ctx.get(bus.err)
    await ctx.tick()
    return result


def test_ports_and_signature():
    bank = RegisterBank(R)
    link = HostLink()
    assert bank.port("scratch") is bank.scratch and bank.port("SCRATCH") is bank.scratch
    assert bank.bus.signature.flip() == RegisterBusSignature()
    assert link.bus.signature == RegisterBusSignature()
    for reg in R:
        port = bank.port(reg.name)
        assert len(port) == reg.width
        if reg.access == ACCESS_RW:
            assert port.init == reg.reset
    with pytest.raises(KeyError, match="no register 'NOPE'"):
        bank.port("nope")
    rtlil.convert(bank)           # elaborates and converts
    rtlil.convert(link)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_name_clash_rejected():
    with pytest.raises(ValueError, match="port name 'bus' clashes") as excinfo:
        RegisterBank(RegisterMap("x", (Register("BUS", 0, ACCESS_RW, 8, ""),)))
    del excinfo
    gc.collect()                  # the half-built bank warns UnusedElaboratable here, not later


def test_reset_values_and_every_register():
    bank = RegisterBank(R)
    rng = random.Random(2)
    ro_vals = {r.name: rng.getrandbits(r.width) for r in R if r.access == ACCESS_RO}

    async def tb(ctx):
        for name, v in ro_vals.items():
            ctx.set(bank.port(name), v)
        for reg in R:
            data, err = await bus_read(ctx, bank.bus, reg.addr)
            expected = {ACCESS_RW: reg.reset, ACCESS_RO: ro_vals.get(reg.name), ACCESS_STROBE: 0}[reg.access]
            assert (data, err) == (expected, 0), reg.name

    simulate(bank, tb)


def test_rw_write_masks_and_reads_back():
    bank = RegisterBank(R)

    async def tb(ctx):
        rng = random.Random(4)
        for reg in (r for r in R if r.access == ACCESS_RW):
            v = rng.getrandbits(32) | 0xF000_0000
            assert await bus_write(ctx, bank.bus, reg.addr, v) == 0
            assert ctx.get(bank.port(reg.name)) == v & ((1 << reg.width) - 1)
            assert await bus_read(ctx, bank.bus, reg.addr) == (v & ((1 << reg.width) - 1), 0)

    simulate(bank, tb)


def test_ro_is_sampled_on_read_and_write_errs():
    bank = RegisterBank(R)

    async def tb(ctx):
        ctx.set(bank.status, 0b101)
        assert await bus_read(ctx, bank.bus, R["STATUS"].addr) == (0b101, 0)
        ctx.set(bank.status, 0b010)
        assert await bus_read(ctx, bank.bus, R["STATUS"].addr) == (0b010, 0)
        assert await bus_write(ctx, bank.bus, R["STATUS"].addr, 0) == 1
        assert await bus_write(ctx, bank.bus, R["ID"].addr, 0) == 1

    simulate(bank, tb)


def test_strobe_pulses_exactly_one_cycle():
    bank = RegisterBank(R)

    async def tb(ctx):
        bus = bank.bus
        ctx.set(bus.addr, R["CMD"].addr)
        ctx.set(bus.w_data, 0xFFFF_FFF5)
        ctx.set(bus.w_en, 1)
        assert ctx.get(bank.cmd) == 0
        await ctx.tick()
        ctx.set(bus.w_en, 0)
        assert (ctx.get(bank.cmd), ctx.get(bus.err)) == (0b0101, 0)
        await ctx.tick()
        assert ctx.get(bank.cmd) == 0
        # back-to-back strobes: one pulse per write
        seen = []
        for v in (1, 2, 4, 8):
            ctx.set(bus.w_data, v)
            ctx.set(bus.w_en, 1)
            await ctx.tick()
            seen.append(ctx.get(bank.cmd))
        ctx.set(bus.w_en, 0)
        await ctx.tick()
        assert seen == [1, 2, 4, 8] and ctx.get(bank.cmd) == 0
        assert await bus_read(ctx, bus, R["CMD"].addr) == (0, 0)

    simulate(bank, tb)


def test_unmapped_addresses_err():
    bank = RegisterBank(R)

    async def tb(ctx):
        await bus_write(ctx, bank.bus, R["SCRATCH"].addr, 0x5A5A5A5A)
        for a in UNMAPPED:
            assert await bus_read(ctx, bank.bus, a) == (0, 1)
            assert await bus_write(ctx, bank.bus, a, 0xFFFF_FFFF) == 1
        assert await bus_read(ctx, bank.bus, R["SCRATCH"].addr) == (0x5A5A5A5A, 0)

    simulate(bank, tb)


def test_pipelined_requests_every_cycle():
    """A request every cycle; each response arrives in the next cycle, err low when idle."""
    bank = RegisterBank(R)
    ops = [("w", R["SCRATCH"].addr, 1), ("r", R["SCRATCH"].addr, None), ("r", 0x0013, None),
           ("w", R["SEED_LO"].addr, 7), ("r", R["SEED_LO"].addr, None), ("w", R["STATUS"].addr, 1),
           ("r", R["PZ_Q15"].addr, None), (None, 0, None)]
    expected = [(None, 0), (1, 0), (0, 1), (None, 0), (7, 0), (None, 1), (16384, 0), (None, 0)]

    async def tb(ctx):
        bus = bank.bus
        got = []
        for op, addr, v in ops:
            ctx.set(bus.addr, addr)
            ctx.set(bus.w_en, op == "w")
            ctx.set(bus.r_en, op == "r")
            ctx.set(bus.w_data, v or 0)
            await ctx.tick()
            got.append((ctx.get(bus.r_data) if op == "r" else None, ctx.get(bus.err)))
        assert got == expected

    simulate(bank, tb)


def test_sync_reset_restores_init():
    bank = RegisterBank(R)
    rst = Signal()
    m = Module()
    m.submodules.bank = ResetInserter(rst)(bank)

    async def tb(ctx):
        await bus_write(ctx, bank.bus, R["PZ_Q15"].addr, 123)
        await bus_write(ctx, bank.bus, R["SCRATCH"].addr, 0xABCDEF)
        assert ctx.get(bank.pz_q15) == 123
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        assert ctx.get(bank.pz_q15) == 16384 and ctx.get(bank.scratch) == 0
        assert await bus_read(ctx, bank.bus, R["PZ_Q15"].addr) == (16384, 0)

    simulate(bank, tb, top=m)


def ram_bank(seed=5):
    """Alice's bank with its counter-RAM window on a plain 48-bit memory of random words."""
    from amaranth.lib.memory import Memory
    from qkdlink.gateware.alice import ALICE_COUNTER_WORDS, ALICE_RAM_REGISTERS
    rng = random.Random(seed)
    words = [rng.getrandbits(48) for _ in ALICE_COUNTER_WORDS]
    bank = RegisterBank(R, ALICE_RAM_REGISTERS, len(words), 48)
    m = Module()
    m.submodules.bank = bank
    m.submodules.mem = mem = Memory(shape=48, depth=len(words), init=words)
    rp = mem.read_port()
    m.d.comb += [rp.addr.eq(bank.ram_addr), rp.en.eq(bank.ram_en), bank.ram_data.eq(rp.data)]
    expected = {name: (words[w] >> lsb) & ((1 << R[name].width) - 1) for name, (w, lsb) in ALICE_RAM_REGISTERS.items()}
    return bank, m, expected


def test_ram_backed_registers_read_their_slice():
    bank, m, expected = ram_bank()
    assert "SNAP_SLOT_LO" in expected and "SNAP_RCT_FAILS" in expected
    with pytest.raises(KeyError, match="RAM-backed"):
        bank.port("SNAP_SLOT_LO")

    async def tb(ctx):
        ctx.set(bank.status, 0b011)
        for name, v in expected.items():
            assert await bus_read(ctx, bank.bus, R[name].addr) == (v, 0), name
            assert await bus_write(ctx, bank.bus, R[name].addr, 0) == 1, name      # RO
        # every cycle, RAM-backed and ordinary registers mixed; r_data held while idle
        rng = random.Random(6)
        names = list(expected) + ["STATUS", "SCRATCH", "PZ_Q15"]
        ordinary = {"STATUS": 0b011, "SCRATCH": 0, "PZ_Q15": 16384}
        last = None
        for _ in range(300):
            name = rng.choice(names)
            read = rng.random() < 0.7
            ctx.set(bank.bus.addr, R[name].addr)
            ctx.set(bank.bus.r_en, read)
            await ctx.tick()
            if read:
                last = expected.get(name, ordinary.get(name))
            if last is not None:
                assert ctx.get(bank.bus.r_data) == last
            assert ctx.get(bank.bus.err) == 0

    simulate(bank, tb, top=m)


def test_busy_reaches_the_bus():
    bank, m, _ = ram_bank()

    async def tb(ctx):
        assert ctx.get(bank.bus.busy) == 0
        ctx.set(bank.busy, 1)
        assert ctx.get(bank.bus.busy) == 1

    simulate(bank, tb, top=m)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_ram_registers_rejected():
    with pytest.raises(ValueError, match="not in register map"):
        RegisterBank(R, {"NOPE": (0, 0)}, 4, 48)
    with pytest.raises(ValueError, match="SCRATCH: access 'rw'"):
        RegisterBank(R, {"SCRATCH": (0, 0)}, 4, 48)
    with pytest.raises(ValueError, match="SNAP_SLOT_LO: word 4, bits 0..31 outside"):
        RegisterBank(R, {"SNAP_SLOT_LO": (4, 0)}, 4, 48)
    with pytest.raises(ValueError, match="SNAP_SLOT_LO: word 0, bits 20..51 outside"):
        RegisterBank(R, {"SNAP_SLOT_LO": (0, 20)}, 4, 48)
    with pytest.raises(ValueError, match="ram_depth = 0"):
        RegisterBank(R, {"SNAP_SLOT_LO": (0, 0)})
    gc.collect()


def test_live_registers_two_clock_read():
    """Live registers: index out in the request cycle, the reader's word returned two later,
    mixed every cycle with ordinary registers (read latency 2)."""
    live = LINK_COUNTER_REGISTERS
    bank = RegisterBank(R, read_latency=2, live_registers=live)
    with pytest.raises(KeyError, match="live"):
        bank.port("RX_FRAMES")

    def word(index):
        return 0x1000_0001 * (index + 1) & 0xFFFF_FFFF

    async def tb(ctx):
        ctx.set(bank.status, 0b101)
        rng = random.Random(8)
        names = list(live) + ["STATUS", "PZ_Q15"]
        ordinary = {"STATUS": 0b101, "PZ_Q15": 16384}
        in_flight = [None, None]          # reader index requested 1 and 2 cycles ago
        expect = [None, None]             # bus.r_data due 1 and 2 cycles ahead
        last = None
        for _ in range(400):
            name = rng.choice(names)
            read = rng.random() < 0.7
            ctx.set(bank.bus.addr, R[name].addr)
            ctx.set(bank.bus.r_en, read)
            assert ctx.get(bank.live_en) == read
            if name in live:
                assert ctx.get(bank.live_addr) == live[name]
            if in_flight[1] is not None:      # a reader holds its word until the next result
                ctx.set(bank.live_data, word(in_flight[1]))
            if expect[1] is not None:
                last = expect[1]
            if last is not None:
                assert ctx.get(bank.bus.r_data) == last
            assert ctx.get(bank.bus.err) == 0
            await ctx.tick()
            in_flight = [ctx.get(bank.live_addr) if read else None, in_flight[0]]
            expect = [(word(live[name]) if name in live else ordinary[name]) if read else None, expect[0]]

    simulate(bank, tb)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_live_registers_rejected():
    with pytest.raises(ValueError, match="read_latency = 2"):
        RegisterBank(R, live_registers={"RX_FRAMES": 0})
    with pytest.raises(ValueError, match="live register 'SCRATCH'"):
        RegisterBank(R, read_latency=2, live_registers={"SCRATCH": 0})
    with pytest.raises(ValueError, match="index -1"):
        RegisterBank(R, read_latency=2, live_registers={"RX_FRAMES": -1})
    with pytest.raises(ValueError, match="live register 'SNAP_SLOT_LO'"):
        RegisterBank(R, {"SNAP_SLOT_LO": (0, 0)}, 4, 48, read_latency=2, live_registers={"SNAP_SLOT_LO": 0})
    gc.collect()
