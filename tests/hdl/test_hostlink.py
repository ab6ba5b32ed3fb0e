"""HostLink + RegisterBank under amaranth.sim vs protocol.DeviceModel, byte stream for byte stream."""
import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.back import rtlil
from amaranth.sim import Simulator

from qkdlink.gateware import protocol as P
from qkdlink.gateware.protocol import (
    FLAG, LINK_COUNTER_NAMES, DeviceModel, FrameDecoder, MsgType, NakCode, Status, encode_frame,
    parse_response,
)
from qkdlink.gateware.regmap import (
    ACCESS_RO, ACCESS_RW, ACCESS_STROBE, ALICE_REGISTERS, ID_ALICE, REGMAP_VERSION, Register, RegisterMap,
)
from qkdlink.hdl.choice_memory import STATUS_FUTURE, STATUS_LOST, STATUS_OK
from qkdlink.hdl.hostlink import LINK_COUNTER_REGISTERS, HostLink, connect_link_counters
from qkdlink.hdl.regbank import RegisterBank

R = ALICE_REGISTERS


def ro_values(regmap, seed=1):
    """Constant values for the RO registers that are not link counters."""
    rng = random.Random(seed)
    vals = {}
    for r in regmap:
        if r.access == ACCESS_RO and r.name.lower() not in LINK_COUNTER_NAMES:
            vals[r.name] = rng.getrandbits(r.width)
    if "ID" in vals:
        vals["ID"] = ID_ALICE
        vals["VERSION"] = REGMAP_VERSION
    return vals


class ChoiceTable:
    """The choice-memory stand-in's contents: a dict slot -> (symbol, status), FUTURE elsewhere."""

    def __init__(self, seed=0, slots=()):
        rng = random.Random(seed)
        self.table = {s: (rng.getrandbits(4), rng.choice((STATUS_OK, STATUS_OK, STATUS_LOST)))
                      for s in slots}
        for s, (sym, st) in self.table.items():
            if st != STATUS_OK:
                self.table[s] = (0, st)

    def __call__(self, slot):
        return self.table.get(slot, (0, STATUS_FUTURE))


def run_link(data: bytes, *, regmap=R, choice=None, seed=0, tx_ready_p=1.0, rx_valid_p=1.0,
             ans_ready_p=1.0, ans_delay=(1, 1), ready_waits_valid=False, check_model=True, read_latency=2):
    """Feed ``data`` to the gateware; return (output bytes, results, model).

    ``ready_waits_valid``: the tx sink raises ``ready`` only while ``valid`` is high (legal for
    a sink; deadlocks a source that waits for ``ready``).
    """
    if read_latency == 1:   # the link counters are live registers, which need read latency 2
        regmap = RegisterMap(regmap.name, tuple(r for r in regmap if r.name not in LINK_COUNTER_REGISTERS))
    ro = ro_values(regmap)
    model = DeviceModel(regmap, ro=dict(ro), choice=choice)
    expected = model.feed(data)

    link = HostLink(choice_query=choice is not None, read_latency=read_latency)
    live = {n: i for n, i in LINK_COUNTER_REGISTERS.items() if n in regmap}
    bank = RegisterBank(regmap, read_latency=read_latency, live_registers=live)
    m = Module()
    m.submodules.link = link
    m.submodules.bank = bank
    wiring.connect(m, link.bus, bank.bus)
    if live:
        connect_link_counters(m, link, bank)

    rng = random.Random(seed)
    out = bytearray()
    result = {}
    strobe_regs = [r for r in regmap if r.access == ACCESS_STROBE]
    limit = 40 * len(data) + 40 * len(expected) + 400

    async def tb(ctx):
        for name, v in ro.items():
            ctx.set(bank.port(name), v)
        pos = 0
        pending = []          # choice answers: [ready_cycle, payload dict]
        strobes = []
        held = None           # (payload) of a tx byte offered but not yet taken
        idle = 0
        cycle = 0
        while cycle < limit:
            cycle += 1
            rx_v = pos < len(data) and rng.random() < rx_valid_p
            ctx.set(link.rx.valid, rx_v)
            if rx_v:
                ctx.set(link.rx.payload, data[pos])
            tx_ready = rng.random() < tx_ready_p
            if ready_waits_valid:
                tx_ready = tx_ready and ctx.get(link.tx.valid)
            ctx.set(link.tx.ready, tx_ready)
            if choice is not None:
                ctx.set(link.choice_query.ready, rng.random() < ans_ready_p)
                a_v = bool(pending) and pending[0][0] <= cycle
                ctx.set(link.choice_answer.valid, a_v)
                if a_v:
                    ctx.set(link.choice_answer.payload, pending[0][1])
            sample = [link.rx.ready, link.tx.valid, link.tx.payload, link.tx.ready]
            if choice is not None:
                sample += [link.choice_query.valid, link.choice_query.ready, link.choice_query.payload,
                           link.choice_answer.valid, link.choice_answer.ready]
            sample += [bank.port(r.name) for r in strobe_regs]
            vals = (await ctx.tick().sample(*sample))[2:]
            rx_r, tx_v, tx_d, tx_r = vals[:4]
            if rx_v and rx_r:
                pos += 1
            if held is not None:
                assert tx_v and tx_d == held, "tx stream rule: a valid byte changed before being taken"
            held = tx_d if tx_v and not tx_r else None
            if tx_v and tx_r:
                out.append(tx_d)
                idle = 0
            else:
                idle += 1
            k = 4
            if choice is not None:
                q_v, q_r, q_d, a_v_s, a_r = vals[4:9]
                k = 9
                if a_v_s and a_r:
                    pending.pop(0)
                if q_v and q_r:
                    sym, st = choice(q_d)
                    pending.append([cycle + rng.randint(*ans_delay),
                                    {"slot": q_d, "symbol": sym, "status": st}])
            for r, v in zip(strobe_regs, vals[k:]):
                if v:
                    strobes.append((r.name, v))
            if pos == len(data) and len(out) >= len(expected) and idle > 60:
                break
        result["counters"] = dict(zip(LINK_COUNTER_NAMES, link.link_counters.peek(ctx)))
        result["rw"] = {r.name: ctx.get(bank.port(r.name)) for r in regmap if r.access == ACCESS_RW}
        result["strobes"] = strobes
        result["pos"] = pos

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()

    assert result["pos"] == len(data), f"gateware took {result['pos']} of {len(data)} input bytes"
    out = bytes(out)
    if check_model:
        if out != expected:
            dec_o, dec_e = FrameDecoder(), FrameDecoder()
            raise AssertionError(f"output differs from model:\n gateware {dec_o.feed(out)}\n model    {dec_e.feed(expected)}")
        assert result["counters"] == model.counters
        assert result["rw"] == model.rw
        assert result["strobes"] == model.strobes
    return out, result, model


@pytest.mark.parametrize("choice", [False, True])
def test_converts(choice):
    text = rtlil.convert(HostLink(choice_query=choice))
    assert ("choice_answer" in text) == choice


def answers(out: bytes):
    frames = FrameDecoder().feed(out)
    return [parse_response(f) for f in frames], frames


class Host:
    """Builds a request stream with consecutive SEQs."""

    def __init__(self, seq=0):
        self.seq = seq
        self.stream = bytearray()
        self.sent = []   # seqs of valid requests

    def frame(self, msg_type, payload):
        self.stream += encode_frame(msg_type, self.seq, payload)
        self.sent.append(self.seq)
        self.seq = (self.seq + 1) & 0xFF

    def write(self, addr, value):
        self.frame(MsgType.REG_WRITE, P.reg_write(addr, value))

    def read(self, addr, count=1):
        self.frame(MsgType.REG_READ, addr.to_bytes(2, "little") + bytes((count,)))

    def choice(self, first, count):
        self.frame(MsgType.CHOICE_QUERY, first.to_bytes(6, "little") + bytes((count,)))

    def raw(self, data):
        self.stream += data


def test_write_read_roundtrip():
    h = Host()
    writes = {"SCRATCH": 0xDEADBEEF, "CTRL": 0xFFFFFFFF, "SEED_LO": 0x12345678, "SEED_HI": 0x9ABCDEF0,
              "STOP_AT_SLOT_HI": 0xABCD1234, "PZ_Q15": 20000, "PULSE_WIDTH_SAMPLES": 0x13}
    for name, v in writes.items():
        h.write(R[name].addr, v)
    for name in writes:
        h.read(R[name].addr)
    h.read(R["ID"].addr, 4)
    h.write(R["CMD"].addr, 0b1011)              # strobe
    h.write(R["STATUS"].addr, 1)                # RO -> BAD_ADDRESS
    h.write(0x0013, 1)                          # unmapped -> BAD_ADDRESS
    h.read(R["CMD"].addr)                       # strobe reads 0
    h.read(R["RX_FRAMES"].addr, 9)              # the link's own counters, live
    out, res, model = run_link(bytes(h.stream))
    msgs, frames = answers(out)
    assert [f.seq for f in frames] == list(range(len(h.sent)))          # device SEQ
    assert [msg.req_seq for msg in msgs] == h.sent
    n = len(writes)
    assert all(isinstance(a, P.WriteAck) and a.status == Status.OK for a in msgs[:n])
    for (name, v), rd in zip(writes.items(), msgs[n:2 * n]):
        assert rd.status == Status.OK and rd.values == (v & ((1 << R[name].width) - 1),)
    assert msgs[2 * n].values == (ID_ALICE, REGMAP_VERSION, model._ro_value("BUILD"), 0xDEADBEEF)
    assert msgs[2 * n + 1].status == Status.OK
    assert msgs[2 * n + 2].status == Status.BAD_ADDRESS
    assert msgs[2 * n + 3].status == Status.BAD_ADDRESS
    assert msgs[2 * n + 4].values == (0,)
    counters = msgs[2 * n + 5].values
    assert counters[0] == len(h.sent)                        # rx_frames includes this request
    assert counters[8] == len(h.sent) - 1                    # tx_frames: answers before this one
    assert res["strobes"] == [("CMD", 0b1011)]
    assert res["rw"]["CTRL"] == 0b11


# A map with 40 contiguous RW registers and a few at the top of the address space.
BIG = RegisterMap("big", tuple(Register(f"R{i}", 0x100 + i, ACCESS_RW, 32, "", reset=i * 0x01010101)
                               for i in range(40))
                  + (Register("TOP_RO", 0xFFFE, ACCESS_RO, 32, ""), Register("TOP", 0xFFFF, ACCESS_RW, 32, ""),
                     Register("LOW", 0x0000, ACCESS_RW, 32, "")))


@pytest.mark.parametrize("read_latency", [1, 2])
def test_burst_reads(read_latency):
    h = Host()
    rng = random.Random(3)
    for i in range(40):
        h.write(0x100 + i, rng.choice((0x7E7E7E7E, 0x7D7D7D7D, rng.getrandbits(32))))
    h.read(0x100, 32)                 # full-size burst
    h.read(0x108, 32)
    h.read(0x101, 1)
    h.read(0x100 + 39, 2)             # leaves the map -> BAD_ADDRESS
    h.read(0x100, 0)                  # BAD_VALUE
    h.read(0x100, 33)                 # BAD_VALUE
    h.read(0x100, 255)                # BAD_VALUE
    h.read(0xFFFE, 2)                 # OK, last two addresses
    h.read(0xFFFF, 2)                 # past 0xFFFF -> BAD_ADDRESS (no wrap to 0x0000)
    h.read(0xFFFE, 32)
    out, _, model = run_link(bytes(h.stream), regmap=BIG, read_latency=read_latency)
    msgs, _ = answers(out)
    reads = msgs[40:]
    assert reads[0].status == Status.OK and reads[0].values == tuple(model.rw[f"R{i}"] for i in range(32))
    assert reads[1].values == tuple(model.rw[f"R{i}"] for i in range(8, 40))
    assert [r.status for r in reads[3:]] == [Status.BAD_ADDRESS] + [Status.BAD_VALUE] * 3 + [
        Status.OK, Status.BAD_ADDRESS, Status.BAD_ADDRESS]
    assert reads[4].count == 0 and reads[6].count == 255 and reads[3].values == ()


def bad_crc(msg_type, seq, payload):
    content = bytes((msg_type, seq)) + payload
    crc = P.crc16(content) ^ 0x0100
    return bytes((FLAG,)) + P.stuff(content + crc.to_bytes(2, "big")) + bytes((FLAG,))


def test_receiver_errors_and_recovery():
    h = Host()
    h.raw(b"\x00\x11garbage before the first flag")
    h.read(0)
    h.raw(bad_crc(MsgType.REG_READ, 0x33, P.reg_read(0)))                 # crc
    h.raw(b"\x7e\x02\x01\x7e")                                                 # truncated (2 bytes)
    h.raw(b"\x7e\x7d\x5e\x7e")                                                 # truncated (1 byte)
    h.raw(b"\x7e\x7e\x7e")                                                     # empty frames: ignored
    h.raw(b"\x7e\x02\x01\x05\x7d\x7e")                                         # framing (7D 7E)
    h.raw(b"\x7e\x7d\x7e")                                                     # framing, nothing else
    h.raw(encode_frame(0x02, 0x44, bytes(P.RX_MAX_PAYLOAD + 1)))               # oversize (230 content)
    h.raw(b"\x7e" + bytes(range(1, 256)).replace(b"\x7e", b"").replace(b"\x7d", b"") + b"\x7d\x7e")  # oversize wins
    h.write(R["SCRATCH"].addr, 0x01020304)
    h.raw(encode_frame(0x02, h.seq, bytes(P.RX_MAX_PAYLOAD)))                  # 229 content: bad length, not oversize
    h.seq += 1
    h.raw(b"\x01\x02\x03junk")                                                 # garbage between frames
    h.frame(0x55, b"")                                                         # unknown type
    h.frame(MsgType.REG_WRITE, b"\x03\x00\x01")                                # bad length
    h.frame(MsgType.CHOICE_QUERY, P.choice_query(0, 1))                        # no choice memory: unknown
    h.seq = 0x80                                                               # seq gap
    h.read(R["RX_FRAMES"].addr, 9)
    h.raw(b"\x7e\x7d\x7d\x7e")                                                 # 7D 7D -> 1 byte 0x5D: truncated
    h.read(R["SCRATCH"].addr)
    out, res, model = run_link(bytes(h.stream))
    c = res["counters"]
    assert c == {"rx_frames": 4, "rx_crc_errors": 2, "rx_framing_errors": 2, "rx_oversize": 2,
                 "rx_truncated": 3, "rx_unknown_type": 2, "rx_bad_length": 2, "rx_seq_gaps": 1,
                 "tx_frames": 8}
    msgs, _ = answers(out)
    assert isinstance(msgs[2], P.Nak) and msgs[2].code == NakCode.BAD_LENGTH and msgs[2].msg_type == 0x02
    assert isinstance(msgs[3], P.Nak) and msgs[3].code == NakCode.UNKNOWN_TYPE and msgs[3].msg_type == 0x55
    assert msgs[5].code == NakCode.UNKNOWN_TYPE and msgs[5].msg_type == MsgType.CHOICE_QUERY
    assert msgs[-1].values == (0x01020304,)


def test_garbage_never_loses_valid_frames():
    """Random garbage (any bytes, flags included) between valid frames; every valid frame answered."""
    rng = random.Random(11)
    h = Host()
    for i in range(40):
        garbage = bytes(rng.choice((0x7E, 0x7D, 0x00, 0x5E, rng.getrandbits(8)))
                        for _ in range(rng.randint(0, 12)))
        h.raw(garbage)
        h.raw(b"\x7e")        # the receiver resynchronises on a flag; the frame's own flag follows
        if i % 2:
            h.write(R["SCRATCH"].addr, rng.getrandbits(32))
        else:
            h.read(rng.randrange(0, 5))
    out, res, _ = run_link(bytes(h.stream), seed=5)
    msgs, _ = answers(out)
    valid = [m_ for m_ in msgs if not isinstance(m_, P.Nak)]
    assert [m_.req_seq for m_ in valid][-40:] == h.sent


def test_stuffing_heavy():
    h = Host(seq=0x7C)
    for v in (0x7E7E7E7E, 0x7D7D7D7D, 0x7E7D7E7D, 0x5E5D7D7E):
        h.write(R["SCRATCH"].addr, v)
        h.read(R["SCRATCH"].addr)
    h.read(R["RX_FRAMES"].addr, 9)
    # enough frames for the device SEQ to pass 0x7D/0x7E, with values that stuff
    for i in range(130):
        h.write(R["SEED_LO"].addr, 0x7E7D0000 | i)
    h.read(R["SEED_LO"].addr, 2)
    out, _, _ = run_link(bytes(h.stream), tx_ready_p=0.7, seed=2)
    msgs, frames = answers(out)
    assert msgs[1].values == (0x7E7E7E7E,) and msgs[7].values == (0x5E5D7D7E,)
    assert {0x7D, 0x7E} <= {f.seq for f in frames}
    assert out.count(FLAG) == 2 * len(frames)


def test_backpressure():
    h = Host()
    rng = random.Random(8)
    for i in range(12):
        h.write(R["SCRATCH"].addr, rng.getrandbits(32))
        h.read(R["ID"].addr, 4)
        h.read(R["SNAP_SLOT_LO"].addr, rng.randint(1, 24))
    h.read(R["RX_FRAMES"].addr, 9)
    run_link(bytes(h.stream), tx_ready_p=0.25, rx_valid_p=0.6, seed=4)
    run_link(bytes(h.stream), tx_ready_p=0.5, seed=5, ready_waits_valid=True)


@pytest.mark.parametrize("tx_ready_p,ans_ready_p,delay", [(1.0, 1.0, (1, 1)), (0.4, 0.5, (1, 6))])
def test_choice_query(tx_ready_p, ans_ready_p, delay):
    top = (1 << 48) - 3
    choice = ChoiceTable(seed=1, slots=list(range(1000, 1300)) + list(range(top - 10, top + 3)) + [0, 1, 2])
    h = Host()
    h.choice(1000, 1)
    h.choice(1000, 200)
    h.choice(1100, 37)
    h.choice(top, 6)                  # wraps past 2**48 - 1 to slot 0
    h.choice(1234, 0)                 # NAK BAD_LENGTH
    h.choice(1234, 201)               # NAK BAD_LENGTH
    h.choice(5_000_000, 3)            # FUTURE
    h.read(R["RX_FRAMES"].addr, 9)
    out, res, _ = run_link(bytes(h.stream), choice=choice, tx_ready_p=tx_ready_p,
                           ans_ready_p=ans_ready_p, ans_delay=delay, seed=6)
    msgs, _ = answers(out)
    assert msgs[1].count == 200 and msgs[1].entries == tuple(
        choice(s)[0] | choice(s)[1] << 4 for s in range(1000, 1200))
    assert msgs[3].entries == tuple(choice(s)[0] | choice(s)[1] << 4 for s in (top, top + 1, top + 2, 0, 1, 2))
    assert isinstance(msgs[4], P.Nak) and msgs[4].code == NakCode.BAD_LENGTH
    assert isinstance(msgs[5], P.Nak) and msgs[5].code == NakCode.BAD_LENGTH
    assert msgs[6].statuses == (STATUS_FUTURE,) * 3
    assert msgs[7].values[0] == 8 and res["counters"]["rx_bad_length"] == 0


@pytest.mark.parametrize("seed, read_latency", [(21, 1), (22, 2), (23, 1), (24, 2)])
def test_random_stream(seed, read_latency):
    """Random requests, corruptions and garbage, random back-pressure everywhere."""
    rng = random.Random(seed)
    choice = ChoiceTable(seed=seed, slots=range(0, 400))
    h = Host(seq=rng.getrandbits(8))
    addrs = [r.addr for r in R] + [0x13, 0x30, 0xFFFF]
    for _ in range(150):
        k = rng.random()
        if k < 0.25:
            h.write(rng.choice(addrs), rng.choice((rng.getrandbits(32), 0x7E7E7D7D)))
        elif k < 0.5:
            h.read(rng.choice(addrs), rng.choice((1, 1, 2, 9, 32, 0, 40)))
        elif k < 0.65:
            h.choice(rng.randrange(0, 450), rng.choice((1, 5, 40, 0, 250)))
        elif k < 0.75:
            f = bytearray(encode_frame(rng.choice((1, 2, 3, 0x81, 0)), h.seq,
                                       bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 18)))))
            h.raw(f)
            h.seq = (h.seq + 1) & 0xFF
        elif k < 0.9:
            f = bytearray(encode_frame(2, h.seq, P.reg_read(0, 4)))
            i = rng.randrange(1, len(f) - 1)
            f[i] = rng.getrandbits(8)           # corrupt one byte (may become a flag or escape)
            h.raw(f)
        else:
            h.raw(bytes(rng.choice((FLAG, 0x7D, 0x00, 0x5E, rng.getrandbits(8)))
                        for _ in range(rng.randint(1, 30))))
        if rng.random() < 0.1:
            h.seq = rng.getrandbits(8)
    h.read(R["RX_FRAMES"].addr, 9)
    run_link(bytes(h.stream), choice=choice, seed=seed, read_latency=read_latency,
             tx_ready_p=rng.choice((1.0, 0.5)),
             rx_valid_p=0.8, ans_ready_p=0.7, ans_delay=(1, 4))


def test_write_ack_waits_for_the_snapshot_sweep():
    """CMD.SNAPSHOT against a CounterRam: the ACK leaves after ``busy`` falls, and reads right
    after it see the complete snapshot (every counter counts every clock)."""
    from qkdlink.gateware.alice import ALICE_COUNTER_WORDS, ALICE_RAM_REGISTERS
    from qkdlink.hdl.counter_ram import CounterRam
    n = len(ALICE_COUNTER_WORDS)
    link = HostLink()
    bank = RegisterBank(R, ALICE_RAM_REGISTERS, n, 48)
    cram = CounterRam(n, 48, 1)
    m = Module()
    m.submodules += [link, bank, cram]
    wiring.connect(m, link.bus, bank.bus)
    m.d.comb += [cram.inc[i].eq(1) for i in range(n)]
    m.d.comb += [cram.snapshot.eq(bank.cmd[0]), cram.clear.eq(bank.cmd[1]), cram.r_en.eq(bank.ram_en),
                 cram.r_addr.eq(bank.ram_addr), bank.ram_data.eq(cram.r_data), bank.busy.eq(cram.busy)]
    h = Host()
    for cmd in (0b01, 0b11, 0b01):           # snapshot; snapshot + clear; snapshot
        h.write(R["CMD"].addr, cmd)
        h.read(R["SNAP_SLOT_LO"].addr, 2 * 10)
        h.read(R["SNAP_RCT_FAILS"].addr, 2)
        h.read(R["SNAP_SIFT_DETECTED_SIGNAL_Z_LO"].addr, 2 * 13)
    data = bytes(h.stream)
    out = bytearray()
    events = {"strobe": [], "busy_fall": [], "frame_start": []}

    async def tb(ctx):
        pos, cycle, idle, busy_prev, in_frame = 0, 0, 0, False, False
        ctx.set(link.tx.ready, 1)
        while cycle < 20000 and not (pos == len(data) and idle > 200):
            ctx.set(link.rx.valid, pos < len(data))
            if pos < len(data):
                ctx.set(link.rx.payload, data[pos])
            _, _, rx_r, tx_v, tx_d, cmd, busy = await ctx.tick().sample(
                link.rx.ready, link.tx.valid, link.tx.payload, bank.cmd, cram.busy)
            if pos < len(data) and rx_r:
                pos += 1
            if cmd & 1:
                events["strobe"].append(cycle)
            if busy_prev and not busy:
                events["busy_fall"].append(cycle)
            busy_prev = busy
            idle += 1
            if tx_v:
                idle = 0
                out.append(tx_d)
                if tx_d == FLAG and not in_frame:
                    events["frame_start"].append(cycle)
                in_frame = (tx_d != FLAG) or not in_frame
            cycle += 1

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    msgs, _ = answers(bytes(out))
    assert len(msgs) == 12 and len(events["strobe"]) == 3
    for k, t in enumerate(events["strobe"]):
        ack, lo_hi, fails, sift = msgs[4 * k:4 * k + 4]
        assert isinstance(ack, P.WriteAck) and ack.status == Status.OK
        fall = min(c for c in events["busy_fall"] if c > t)
        assert fall >= t + cram.sweep_clocks
        ack_start = events["frame_start"][4 * k]
        assert ack_start > fall, "the ACK left before the sweep finished"
        # counters count every clock from reset (clock 0) or after the clear before
        value = t if k < 2 else t - 1 - events["strobe"][1]
        assert lo_hi.values == (value & 0xFFFFFFFF, value >> 32) * 10
        assert fails.values == (value,) * 2
        assert sift.values == (value & 0xFFFFFFFF, value >> 32) * 13
