"""Sifting messages: HostLink (Alice: SIFT_QUERY; Bob: DETECTIONS, SIFT_APPLY) + RegisterBank under
amaranth.sim vs protocol.DeviceModel, on byte streams, with counter pulses."""
import gc
import random

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from qkdlink.gateware import protocol as P
from qkdlink.gateware.protocol import (
    FLAG, LINK_COUNTER_NAMES, DeviceModel, FrameDecoder, MsgType, NakCode, encode_frame, parse_response,
)
from qkdlink.gateware.regmap import ACCESS_RO, ACCESS_RW, ALICE_REGISTERS, BOB_REGISTERS
from qkdlink.hdl.choice_memory import STATUS_FUTURE, STATUS_LOST, STATUS_OK
from qkdlink.hdl.hostlink import LINK_COUNTER_REGISTERS, HostLink, connect_link_counters
from qkdlink.hdl.record_fifo import pack_record, unpack_record
from qkdlink.hdl.regbank import RegisterBank
from qkdlink.hdl.sift_link import AliceSift, BobSift, EntrySerializer

TOP = 1 << 48
BR = BOB_REGISTERS
AR = ALICE_REGISTERS
CTRL_RECORDS = 1 << BR["CTRL"].field("RECORDS").offset
CTRL_RECORD_BITS = 1 << BR["CTRL"].field("RECORD_BITS").offset


def ro_values(regmap, seed=1):
    rng = random.Random(seed)
    return {r.name: rng.getrandbits(r.width) for r in regmap
            if r.access == ACCESS_RO and r.name.lower() not in LINK_COUNTER_NAMES}


class SymbolTable:
    """Alice's choice memory stand-in: slot -> (symbol, status); FUTURE outside the table."""

    def __init__(self, seed, slots):
        rng = random.Random(seed)
        self.table = {}
        for s in slots:
            st = rng.choice((STATUS_OK,) * 6 + (STATUS_LOST, STATUS_FUTURE))
            if st != STATUS_OK:
                sym = 0
            elif rng.random() < 0.15:
                sym = 3 << 2                                # blank: intensity 3, bit = basis = 0
            else:
                sym = rng.getrandbits(1) | rng.getrandbits(1) << 1 | rng.randrange(3) << 2
            self.table[s] = (sym, st)

    def __call__(self, slot):
        return self.table.get(slot, (0, STATUS_FUTURE))


class Host:
    """Request stream builder with consecutive SEQs (one ``step`` per request if wanted)."""

    def __init__(self, seq=0):
        self.seq = seq
        self.steps = []          # [records, bytes, sync]

    def step(self, records=(), sync=True):
        self.steps.append([list(records), bytearray(), sync])

    def _cur(self):
        if not self.steps:
            self.step()
        return self.steps[-1][1]

    def frame(self, msg_type, payload, seq=None):
        self._cur().extend(encode_frame(msg_type, self.seq if seq is None else seq, payload))
        self.seq = (self.seq + 1) & 0xFF

    def raw(self, data):
        self._cur().extend(data)

    def write(self, addr, value):
        self.frame(MsgType.REG_WRITE, P.reg_write(addr, value))

    def read(self, addr, count=1):
        self.frame(MsgType.REG_READ, P.reg_read(addr, count))

    def choice(self, first, count):
        self.frame(MsgType.CHOICE_QUERY, P.choice_query(first, count))

    def query(self, entries):
        self.frame(MsgType.SIFT_QUERY, P.sift_query(entries))

    def apply(self, entries):
        self.frame(MsgType.SIFT_APPLY, P.sift_apply(entries))


def split_by_type(frames):
    """{type: [payload, ...]} without DETECTIONS, and the concatenated DETECTIONS records."""
    by_type, records = {}, []
    for f in frames:
        if f.type == MsgType.DETECTIONS:
            records += parse_response(f).records
        else:
            by_type.setdefault(f.type, []).append(f.payload)
    return by_type, records


def first_difference(out: bytes, expected: bytes) -> str:
    """The first answer (per type) or record where the gateware differs from the model."""
    (g, gr), (e, er) = (split_by_type(FrameDecoder().feed(x)) for x in (out, expected))
    for t in sorted(set(g) | set(e)):
        for i, (a, b) in enumerate(zip(g.get(t, []), e.get(t, []))):
            if a != b:
                return (f"type {t:#04x} answer {i}: gateware {parse_response(P.Frame(t, 0, a))}, "
                        f"model {parse_response(P.Frame(t, 0, b))}")
    n = next((i for i, (a, b) in enumerate(zip(gr, er)) if a != b), min(len(gr), len(er)))
    return f"records differ from index {n} (gateware {len(gr)}, model {len(er)}); answers {len(g)} / {len(e)}"


PULSES = ("sift_detected", "sift_sifted", "sift_lost", "sift_unanswered", "sift_unmatched")


def run(host: Host, *, role, choice=None, pending_depth=64, seed=0, exact=True, tx_ready_p=1.0,
        rx_valid_p=1.0, ans_ready_p=1.0, ans_delay=(1, 1), rec_valid_p=1.0, ctrl=None):
    """Run the host's steps through gateware and model; compare; return (frames, result, model).

    Each step: its records are offered (model: ``add_records``), then its bytes are fed. A ``sync``
    step waits until the gateware has sent everything the model sent before the step and has
    been quiet for a while, offers its records back to back, waits again until they are out
    (as far as the model sent them), then feeds its bytes; a non-sync step offers its records
    at random times (with valid gaps) while its bytes go in. ``exact``: compare the byte streams; otherwise compare
    per frame type (answers) and the concatenated DETECTIONS records.
    """
    regmap = AR if role == "alice" else BR
    ro = ro_values(regmap, seed)
    model = DeviceModel(regmap, ro=dict(ro), choice=choice, sift_query=role == "alice",
                        sift_apply=role == "bob", pending_depth=pending_depth)
    if ctrl is not None:
        model.rw["CTRL"] = ctrl
    plan = []            # per step: (records, data, sync, expected answers so far, records so far)
    expected = bytearray()
    n_ans = n_rec = 0
    for recs, data, sync in host.steps:
        n_rec_prev = n_rec
        if recs:
            model.add_records(recs)
        flushed = model.feed(b"")
        fr = FrameDecoder().feed(flushed)
        n_rec += sum(len(parse_response(f).records) for f in fr)
        plan.append((recs, bytes(data), sync, n_ans, n_rec_prev, n_rec, len(model.pending)))
        out = model.feed(bytes(data))
        for f in FrameDecoder().feed(out):
            if f.type == MsgType.DETECTIONS:
                n_rec += len(parse_response(f).records)
            else:
                n_ans += 1
        expected += flushed + out
    expected = bytes(expected)

    if role == "alice":
        link = HostLink(choice_query=True, sift_query=True, read_latency=2)
    else:
        link = HostLink(sift_apply=True, pending_depth=pending_depth, read_latency=2)
    bank = RegisterBank(regmap, read_latency=2, live_registers=LINK_COUNTER_REGISTERS)
    m = Module()
    m.submodules.link = link
    m.submodules.bank = bank
    wiring.connect(m, link.bus, bank.bus)
    connect_link_counters(m, link, bank)
    if role == "bob":
        m.d.comb += [link.records_enable.eq(bank.ctrl[1]), link.record_bits.eq(bank.ctrl[2])]

    rng = random.Random(seed)
    result = {}
    pulse_names = [n for n in PULSES if hasattr(link, n)]
    total_bytes = sum(len(x[1]) for x in plan)
    limit = 60 * total_bytes + 40 * len(expected) + 200 * len(plan) + 4000

    async def tb(ctx):
        for name, v in ro.items():
            ctx.set(bank.port(name), v)
        if ctrl is not None:
            ctx.set(bank.ctrl, ctrl)
        dec = FrameDecoder()
        out = bytearray()
        got = {"ans": 0, "rec": 0}
        counts = P.new_sift_counts()
        fifo = []            # records offered: [release cycle, record]
        offering = False
        pending = []         # choice answers in flight
        held = None
        cycle = 0
        quiet = 0
        waiting_for = []

        async def one_cycle(rx_byte):
            nonlocal cycle, offering, held, quiet
            cycle += 1
            if cycle >= limit:
                raise AssertionError(f"timeout waiting for {waiting_for} (answers, records): "
                                     + first_difference(bytes(out), expected))
            rx_v = rx_byte is not None and rng.random() < rx_valid_p
            ctx.set(link.rx.valid, rx_v)
            if rx_v:
                ctx.set(link.rx.payload, rx_byte)
            ctx.set(link.tx.ready, rng.random() < tx_ready_p)
            sample = [link.rx.ready, link.tx.valid, link.tx.payload, link.tx.ready]
            if role == "alice":
                ctx.set(link.choice_query.ready, rng.random() < ans_ready_p)
                a_v = bool(pending) and pending[0][0] <= cycle
                ctx.set(link.choice_answer.valid, a_v)
                if a_v:
                    ctx.set(link.choice_answer.payload, pending[0][1])
                sample += [link.choice_query.valid, link.choice_query.ready, link.choice_query.payload,
                           link.choice_answer.valid, link.choice_answer.ready]
            else:
                avail = bool(fifo) and fifo[0][0] <= cycle
                offering = avail and (offering or rng.random() < rec_valid_p)
                ctx.set(link.records.valid, offering)
                if offering:
                    ctx.set(link.records.payload, fifo[0][1])
                sample += [link.records.valid, link.records.ready]
            sample += [getattr(link, n) for n in pulse_names] + [link.sift_class]
            vals = (await ctx.tick().sample(*sample))[2:]
            rx_r, tx_v, tx_d, tx_r = vals[:4]
            if held is not None:
                assert tx_v and tx_d == held, "tx stream rule: a valid byte changed before being taken"
            held = tx_d if tx_v and not tx_r else None
            activity = False
            if tx_v and tx_r:
                out.append(tx_d)
                activity = True
                for f in dec.feed(bytes((tx_d,))):
                    if f.type == MsgType.DETECTIONS:
                        got["rec"] += len(parse_response(f).records)
                    else:
                        got["ans"] += 1
            if role == "alice":
                q_v, q_r, q_d, a_v_s, a_r = vals[4:9]
                k = 9
                if a_v_s and a_r:
                    pending.pop(0)
                if q_v and q_r:
                    sym, st = choice(q_d)
                    pending.append([cycle + rng.randint(*ans_delay), {"slot": q_d, "symbol": sym, "status": st}])
            else:
                r_v, r_r = vals[4:6]
                k = 6
                if r_v and r_r:
                    fifo.pop(0)
                    offering = False
                    activity = True
            pv = vals[k:]
            cls = pv[-1]
            for name, v in zip(pulse_names, pv[:-1]):
                if v:
                    key = name[len("sift_"):]
                    if key in ("detected", "sifted"):
                        counts[key][cls] += 1
                    else:
                        counts[key] += 1
            quiet = 0 if activity else quiet + 1
            return rx_v and rx_r

        async def wait_for(n_ans, n_rec, q=40):
            waiting_for[:] = [n_ans, n_rec]
            while not (got["ans"] >= n_ans and got["rec"] >= n_rec and quiet >= q):
                await one_cycle(None)

        for recs, data, sync, n_ans_before, n_rec_prev, n_rec_flushed, level in plan:
            if sync:
                await wait_for(n_ans_before, n_rec_prev)
                for r in recs:
                    fifo.append([0, r])
                await wait_for(n_ans_before, n_rec_flushed)
                if role == "bob":
                    assert ctx.get(link.pending_level) == level
            else:
                times = sorted(cycle + rng.randint(0, 3 * len(data) + 10) for _ in recs)
                for t, r in zip(times, recs):          # in order, released over the step
                    fifo.append([t, r])
            pos = 0
            while pos < len(data):
                if await one_cycle(data[pos]):
                    pos += 1
        await wait_for(n_ans, n_rec, q=60 + 3 * pending_depth)
        result["out"] = bytes(out)
        result["counts"] = counts
        result["counters"] = dict(zip(LINK_COUNTER_NAMES, link.link_counters.peek(ctx)))
        result["rw"] = {r.name: ctx.get(bank.port(r.name)) for r in regmap if r.access == ACCESS_RW}
        if role == "bob":
            result["pending_level"] = ctx.get(link.pending_level)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()

    out = result["out"]
    frames = FrameDecoder().feed(out)
    exp_frames = FrameDecoder().feed(expected)
    if exact:
        if out != expected:
            raise AssertionError("output differs from model:\n gateware "
                                 f"{[parse_response(f) for f in frames]}\n model    "
                                 f"{[parse_response(f) for f in exp_frames]}")
        assert result["counters"] == model.counters
    else:
        assert [f.seq for f in frames] == [i & 0xFF for i in range(len(frames))]
        assert split_by_type(frames) == split_by_type(exp_frames)
        assert all(len(parse_response(f).records) <= P.MAX_DETECTION_RECORDS
                   for f in frames if f.type == MsgType.DETECTIONS)
        c = dict(result["counters"])
        assert c.pop("tx_frames") == len(frames)
        assert c == {k: v for k, v in model.counters.items() if k != "tx_frames"}
    assert result["rw"] == model.rw
    assert result["counts"] == model.sift_counts, (result["counts"], model.sift_counts)
    if role == "bob":
        assert result["pending_level"] == len(model.pending)
    return [parse_response(f) for f in frames], result, model


# ------------------------------------------------------------------------------ structure

def test_converts_and_ports():
    alice = HostLink(choice_query=True, sift_query=True)
    text = rtlil.convert(alice)
    assert "sift_lost" in text and "records" not in text
    bob = HostLink(sift_apply=True, pending_depth=100)
    text = rtlil.convert(bob)
    assert "pending_level" in text and "choice_answer" not in text
    assert bob.pending_level.shape().width == 7
    for c in (AliceSift(), BobSift(5), EntrySerializer()):
        rtlil.convert(c)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_bad_parameters():
    for kwargs, match in (({"sift_query": True}, "sift_query needs choice_query"),
                          ({"choice_query": True, "sift_apply": True}, "does not combine"),
                          ({"sift_apply": True, "pending_depth": 0}, "pending_depth")):
        with pytest.raises(ValueError, match=match) as excinfo:
            HostLink(**kwargs)
        del excinfo
    gc.collect()                  # the half-built links warn UnusedElaboratable here, not later


# ------------------------------------------------------------------------------ Alice

def alice_entries(rng, table_slots, n, extra=()):
    slots = rng.sample(table_slots, n - len(extra)) + list(extra)
    rng.shuffle(slots)
    return [(s, rng.getrandbits(1)) for s in slots]


@pytest.mark.parametrize("tx_ready_p,ans_ready_p,delay,rx_valid_p", [
    (1.0, 1.0, (1, 1), 1.0), (0.4, 0.5, (1, 5), 0.7)])
def test_alice_sift_query(tx_ready_p, ans_ready_p, delay, rx_valid_p):
    rng = random.Random(3)
    slots = list(range(5000, 5400)) + list(range(TOP - 20, TOP))
    choice = SymbolTable(7, slots)
    h = Host(seq=250)
    h.query([(5000, 0)])                                             # 1 entry
    h.write(AR["SCRATCH"].addr, 0x7E7D7E7D)
    h.query(alice_entries(rng, slots, 17, extra=(9_000_000,)))       # 17, one FUTURE
    h.raw(b"\x00\x7dgarbage\x7e\x7e")
    h.choice(5100, 40)
    h.query(alice_entries(rng, slots, 32, extra=(TOP - 1, TOP - 5)))  # 32
    h.read(AR["RX_FRAMES"].addr, 9)
    h.query([(s, b) for s in (5001, 5002) for b in (0, 1)])         # both bases of the same slots
    h.query(alice_entries(rng, slots, 32))
    h.read(AR["SCRATCH"].addr)
    msgs, res, model = run(h, role="alice", choice=choice, tx_ready_p=tx_ready_p, ans_ready_p=ans_ready_p,
                           ans_delay=delay, rx_valid_p=rx_valid_p, seed=4)
    kinds = [type(x).__name__ for x in msgs]
    assert kinds == ["SiftAnswer", "SiftedKey", "WriteAck", "SiftAnswer", "SiftedKey", "ChoiceData",
                     "SiftAnswer", "SiftedKey", "ReadData", "SiftAnswer", "SiftedKey",
                     "SiftAnswer", "SiftedKey", "ReadData"]
    assert [len(msgs[i].entries) for i in (0, 3, 6, 9, 11)] == [1, 17, 32, 4, 32]
    # both frames of a query carry its req_seq; key entries are the kept answers, in order
    for a, k in zip(msgs[0::1], msgs[1::1]):
        if isinstance(a, P.SiftAnswer):
            assert isinstance(k, P.SiftedKey) and k.req_seq == a.req_seq
            kept = [s for s, ab in a.entries if ab & 1]
            assert [s for s, _ in k.entries] == kept
            for s, kb in k.entries:
                assert kb == choice(s)[0]
    statuses = [P.unpack_answer_byte(ab)[2] for x in msgs if isinstance(x, P.SiftAnswer) for _, ab in x.entries]
    assert {STATUS_OK, STATUS_LOST, STATUS_FUTURE} <= set(statuses)
    c = model.sift_counts
    assert c["lost"] > 0 and sum(c["sifted"]) > 0 and sum(c["detected"]) > sum(c["sifted"])
    assert msgs[8].values[0] == 6                     # RX_FRAMES includes the read itself


def test_alice_sift_naks():
    choice = SymbolTable(1, range(100))
    h = Host()
    good = P.sift_query([(10, 0), (11, 1)])
    h.frame(MsgType.SIFT_QUERY, good)
    h.frame(MsgType.SIFT_QUERY, bytes((3,)) + good[1:])                  # count != entries: NAK, rx_frames
    h.frame(MsgType.SIFT_QUERY, good[:-1] + b"\x02")                     # basis 2: NAK, rx_frames
    h.frame(MsgType.SIFT_QUERY, bytes((2,)) + good[1:7] + b"\x7e" + good[8:])   # first basis 0x7E
    h.frame(MsgType.SIFT_QUERY, good[:-1])                               # length 14: bad length
    h.frame(MsgType.SIFT_QUERY, b"\x00")                                 # length 1 (k = 0): bad length
    h.frame(MsgType.SIFT_QUERY, b"")                                     # length 0: bad length
    h.frame(MsgType.SIFT_QUERY, good + b"\x00")                          # length 16: bad length
    h.frame(MsgType.SIFT_QUERY, bytes((33,)) + bytes(7 * 32))           # length 225, count 33: NAK
    h.frame(MsgType.SIFT_QUERY, bytes((32,)) + bytes(7 * 32))           # 32 x slot 0 basis 0: OK
    h.frame(MsgType.SIFT_QUERY, bytes((33,)) + bytes(7 * 33))           # 232 bytes: oversize, no answer
    h.frame(MsgType.SIFT_APPLY, P.sift_apply([(10, 1)]))                 # Alice has no SIFT_APPLY
    h.frame(MsgType.DETECTIONS, b"\x01" + bytes(8))                      # a response type: unknown
    h.read(AR["RX_FRAMES"].addr, 9)
    msgs, res, model = run(h, role="alice", choice=choice)
    assert isinstance(msgs[0], P.SiftAnswer) and isinstance(msgs[1], P.SiftedKey)
    naks = msgs[2:10]
    assert all(isinstance(x, P.Nak) and x.code == NakCode.BAD_LENGTH and x.msg_type == MsgType.SIFT_QUERY
               for x in naks)
    assert [x.req_seq for x in naks] == list(range(1, 9))
    _, kept, _ = P.alice_sift_model(choice, [(0, 0)] * 32)
    assert len(msgs[10].entries) == 32 and msgs[11].entries == tuple(kept)
    assert msgs[12] == P.Nak(11, NakCode.UNKNOWN_TYPE, MsgType.SIFT_APPLY)
    assert msgs[13] == P.Nak(12, NakCode.UNKNOWN_TYPE, MsgType.DETECTIONS)
    c = res["counters"]
    assert (c["rx_frames"], c["rx_bad_length"], c["rx_oversize"], c["rx_unknown_type"]) == (7, 4, 1, 2)
    assert c["rx_seq_gaps"] == 1                      # the oversize frame's SEQ is missing


@pytest.mark.parametrize("seed", [31, 32])
def test_alice_random_stream(seed):
    """Random SIFT_QUERY / CHOICE_QUERY / REG requests, corruptions, garbage, back-pressure."""
    rng = random.Random(seed)
    slots = list(range(0, 300))
    choice = SymbolTable(seed, slots)
    h = Host(seq=rng.getrandbits(8))
    addrs = [r.addr for r in AR] + [0x13]
    for _ in range(45):
        k = rng.random()
        if k < 0.4:
            n = rng.choice((1, 2, 7, 17, 32))
            h.query([(rng.randrange(0, 330), rng.getrandbits(1)) for _ in range(n)])
        elif k < 0.55:
            h.write(rng.choice(addrs), rng.getrandbits(32))
        elif k < 0.65:
            h.read(rng.choice(addrs), rng.choice((1, 4, 9)))
        elif k < 0.75:
            h.frame(MsgType.CHOICE_QUERY, rng.randrange(0, 320).to_bytes(6, "little") + bytes((rng.choice((1, 13, 0)),)))
        elif k < 0.85:
            f = bytearray(encode_frame(MsgType.SIFT_QUERY, h.seq, P.sift_query([(5, 1), (6, 0), (7, 1)])))
            f[rng.randrange(1, len(f) - 1)] = rng.getrandbits(8)        # corrupted
            h.raw(f)
            h.seq = (h.seq + 1) & 0xFF
        elif k < 0.92:
            n = rng.randrange(0, 40)
            h.frame(MsgType.SIFT_QUERY, bytes((rng.randrange(0, 40),)) + bytes(rng.choice((0, 1, 2)) for _ in range(n)))
        else:
            h.raw(bytes(rng.choice((FLAG, 0x7D, 0x00, 0x5E, rng.getrandbits(8))) for _ in range(rng.randint(1, 30))))
    h.read(AR["RX_FRAMES"].addr, 9)
    run(h, role="alice", choice=choice, seed=seed, tx_ready_p=rng.choice((1.0, 0.6)), rx_valid_p=0.8,
        ans_ready_p=0.7, ans_delay=(1, 3))


# ------------------------------------------------------------------------------ Bob

def rec(slot, basis, bit, fine=0, multi=0, gap=0):
    return pack_record(slot, basis, bit, fine, multi, gap)


def records_for(slots, rng):
    return [rec(s, rng.getrandbits(1), rng.getrandbits(1), rng.randrange(8), rng.getrandbits(1)) for s in slots]


def answers_for(recs, keep_frac, rng, status_choices=(0, 0, 0, 0, 1, 2)):
    """Plausible answers for records: random intensity/status; keep with probability keep_frac."""
    out = []
    for r in recs:
        f = unpack_record(r)
        st = rng.choice(status_choices)
        inten = rng.randrange(4) if st == 0 else 0
        keep = st == 0 and inten != 3 and rng.random() < keep_frac
        out.append((f["slot"], P.answer_byte(keep, inten, st)))
    return out


def test_bob_detections_and_apply_exact():
    rng = random.Random(5)
    h = Host()
    ctrl = CTRL_RECORDS
    recs = records_for(range(1000, 1100, 2), rng)                       # 50 records
    h.step(recs)                                                      # sent as 30 + 20
    h.read(BR["TX_FRAMES"].addr)
    h.step()
    ans = answers_for(recs[:20], 0.7, rng)
    h.apply(ans)                                                      # in order, all matched
    h.step()
    # answers for 1040..: skip some (-> unanswered), add unknown slots (-> unmatched)
    a2 = answers_for(recs[22:30], 0.8, rng)
    a2 = a2[:2] + [(1045, P.answer_byte(1, 0, 0))] + a2[3:] + [(1059, P.answer_byte(1, 1, 0))]
    h.apply(a2)
    h.step()
    h.apply([(1200, P.answer_byte(1, 0, 0))])                          # newer than all: drops everything
    h.step(records_for(range(2000, 2010), rng))
    h.read(BR["RX_FRAMES"].addr, 9)
    h.step()
    h.apply(answers_for(records_for(range(2000, 2010), random.Random(0)), 1.0, rng, (0,)))
    msgs, res, model = run(h, role="bob", ctrl=ctrl, pending_depth=64)
    dets = [x for x in msgs if isinstance(x, P.Detections)]
    assert [len(d.records) for d in dets[:2]] == [30, 20]
    assert list(dets[0].records + dets[1].records) == [r & ~(1 << 49) for r in recs]   # bits hidden
    assert msgs[2].values == (2,)                                      # TX_FRAMES: the two DETECTIONS
    keys = [x for x in msgs if isinstance(x, P.SiftedKey)]
    assert len(keys) == 4
    kept1 = [s for s, a in ans if a & 1]
    assert [s for s, _ in keys[0].entries] == kept1
    for s, kb in keys[0].entries:
        f = unpack_record(next(r for r in recs if unpack_record(r)["slot"] == s))
        assert P.unpack_key_byte(kb)[:2] == (f["bit"], f["basis"])
    c = model.sift_counts
    assert c["unanswered"] >= 3 and c["unmatched"] >= 2
    assert keys[2].entries == ()


def test_bob_wrap_and_ordering():
    rng = random.Random(8)
    slots = [TOP - 6, TOP - 4, TOP - 1, 0, 1, 3, 7]
    recs = records_for(slots, rng)
    h = Host()
    h.step(recs)
    h.apply([(TOP - 4, P.answer_byte(1, 0, 0)), (1, P.answer_byte(1, 1, 0)), (2, P.answer_byte(1, 0, 0))])
    h.step()
    h.apply([(TOP - 2, P.answer_byte(1, 0, 0)), (7, P.answer_byte(1, 2, 0))])  # 3 older than 7: unanswered
    msgs, res, model = run(h, role="bob", ctrl=CTRL_RECORDS)
    k1, k2 = [x for x in msgs if isinstance(x, P.SiftedKey)]
    assert [s for s, _ in k1.entries] == [TOP - 4, 1]
    assert [s for s, _ in k2.entries] == [7]
    assert model.sift_counts["unanswered"] == 4          # TOP-6, TOP-1, 0 (1st apply), 3 (2nd)
    assert model.sift_counts["unmatched"] == 2           # 2, TOP-2
    assert model.pending == []


def test_bob_duplicates_and_empty_queue():
    """A consumed (or dropped) detection is gone: a repeated answer is unmatched, also when the
    queue is empty and its memory still holds the consumed entry (depth 2: wraps at once).
    Malformed answers (keep with LOST or blank) consume but are not kept."""
    h = Host()
    h.step([rec(10, 0, 1), rec(11, 1, 0)])
    h.apply([(11, P.answer_byte(1, 1, 0)), (11, P.answer_byte(1, 1, 0))])
    h.step()
    h.apply([(11, P.answer_byte(1, 0, 0)), (10, P.answer_byte(1, 0, 0))])
    h.step([rec(12, 0, 1)])
    h.apply([(12, P.answer_byte(1, 2, 0)), (12, P.answer_byte(1, 2, 0))])
    h.step([rec(13, 0, 1), rec(14, 1, 1)])
    h.apply([(13, P.answer_byte(1, 3, 0)), (14, P.answer_byte(1, 0, 1))])
    msgs, res, model = run(h, role="bob", ctrl=CTRL_RECORDS | CTRL_RECORD_BITS, pending_depth=2)
    keys = [x for x in msgs if isinstance(x, P.SiftedKey)]
    assert keys == [P.SiftedKey(0, ((11, P.key_byte(0, 1, 1)),)), P.SiftedKey(1, ()),
                    P.SiftedKey(2, ((12, P.key_byte(1, 0, 2)),)), P.SiftedKey(3, ())]
    assert (model.sift_counts["unanswered"], model.sift_counts["unmatched"]) == (1, 4)
    assert sum(model.sift_counts["detected"]) == 2
    assert res["pending_level"] == 0


def test_bob_pending_full_records_wait():
    rng = random.Random(9)
    recs = records_for(range(0, 300, 3), rng)                       # 100 records, depth 40
    h = Host()
    h.step(recs)
    h.read(BR["RX_FRAMES"].addr)
    h.step()
    h.apply(answers_for(recs[:25], 0.5, rng))                         # frees 25 -> 25 more sent
    h.step()
    h.apply([(unpack_record(recs[60])["slot"], P.answer_byte(0, 1, 0))])   # drops 25..59, consumes 60
    h.step()
    h.apply([(10_000, 0)])                                            # drops the rest
    msgs, res, model = run(h, role="bob", ctrl=CTRL_RECORDS, pending_depth=40)
    dets = [len(x.records) for x in msgs if isinstance(x, P.Detections)]
    assert dets == [30, 10, 25, 30, 5]
    assert sum(dets) == 100 and max(dets) <= 30
    assert model.waiting == [] and model.pending == []


def test_bob_record_bits_and_records_off():
    rng = random.Random(10)
    r1 = records_for(range(100, 110), rng)
    r2 = records_for(range(200, 205), rng)
    r3 = records_for(range(300, 303), rng)
    h = Host()
    h.step(r1)                                                     # RECORDS off: waits
    h.read(BR["CTRL"].addr)
    h.step()
    h.write(BR["CTRL"].addr, CTRL_RECORDS | CTRL_RECORD_BITS)         # on, with bits: r1 sent
    h.step(r2)
    h.write(BR["CTRL"].addr, 0)                                       # off again
    h.step(r3)
    h.read(BR["SCRATCH"].addr)
    h.step()
    h.write(BR["CTRL"].addr, CTRL_RECORDS)                            # on, bits hidden: r3 sent
    h.step()
    h.apply(answers_for(r1 + r2 + r3, 1.0, rng, (0,)))
    msgs, res, model = run(h, role="bob", ctrl=0)
    dets = [x for x in msgs if isinstance(x, P.Detections)]
    assert [d.records for d in dets] == [tuple(r1), tuple(r2), tuple(r & ~(1 << 49) for r in r3)]
    assert isinstance(msgs[0], P.ReadData) and isinstance(msgs[1], P.WriteAck)
    key = msgs[-1]
    kept = {s for s, kb in key.entries}
    # Bob's key uses his true bits even when they were hidden from the host
    for r in r1 + r2 + r3:
        f = unpack_record(r)
        if f["slot"] in kept:
            kb = dict(key.entries)[f["slot"]]
            assert P.unpack_key_byte(kb)[:2] == (f["bit"], f["basis"])


def test_bob_naks_and_unknown():
    h = Host()
    h.step([rec(5, 1, 1), rec(6, 0, 1)])
    good = P.sift_apply([(5, 1), (6, 3)])
    h.frame(MsgType.SIFT_APPLY, bytes((1,)) + good[1:])                 # count mismatch: NAK, rx_frames
    h.frame(MsgType.SIFT_APPLY, good[:-2])                               # bad length
    h.frame(MsgType.SIFT_APPLY, b"")                                     # bad length
    h.frame(MsgType.SIFT_APPLY, good[:7] + b"\xe1" + good[8:])            # answer bits 5..7 ignored
    h.frame(MsgType.SIFT_QUERY, P.sift_query([(5, 1)]))                  # Bob has no SIFT_QUERY
    h.frame(MsgType.CHOICE_QUERY, P.choice_query(5, 1))                  # nor CHOICE_QUERY
    h.read(BR["RX_FRAMES"].addr, 9)
    msgs, res, model = run(h, role="bob", ctrl=CTRL_RECORDS)
    assert msgs[0] == P.Detections((rec(5, 1, 0), rec(6, 0, 0)))
    assert msgs[1] == P.Nak(0, NakCode.BAD_LENGTH, MsgType.SIFT_APPLY)
    assert msgs[2] == P.Nak(1, NakCode.BAD_LENGTH, MsgType.SIFT_APPLY)
    assert msgs[3] == P.Nak(2, NakCode.BAD_LENGTH, MsgType.SIFT_APPLY)
    assert msgs[4] == P.SiftedKey(3, ((5, P.key_byte(1, 1, 0)), (6, P.key_byte(1, 0, 1))))
    assert msgs[5] == P.Nak(4, NakCode.UNKNOWN_TYPE, MsgType.SIFT_QUERY)
    assert msgs[6] == P.Nak(5, NakCode.UNKNOWN_TYPE, MsgType.CHOICE_QUERY)
    assert msgs[7].values == (3, 0, 0, 0, 0, 2, 2, 0, 7)
    assert model.sift_counts["sifted"] == [0, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("seed", [41, 42])
def test_bob_random_records_while_busy(seed):
    """Records arrive (with gaps) while requests are processed; per-type comparison. SIFT_APPLY
    steps are synchronised (every record offered before them has been sent). Answer windows
    are chosen from a shadow model's pending queue (some skipped, some bogus, some stale)."""
    rng = random.Random(seed)
    depth = rng.choice((48, 100))
    ctrl = CTRL_RECORDS | (CTRL_RECORD_BITS if seed % 2 else 0)
    shadow = DeviceModel(BR, ro={}, sift_apply=True, pending_depth=depth)
    shadow.rw["CTRL"] = ctrl
    h = Host(seq=rng.getrandbits(8))
    slot = TOP - 300                                    # crosses 2**48
    for i in range(40):
        k = rng.random()
        recs = []
        if rng.random() < 0.6:
            slots = []
            for _ in range(rng.choice((1, 3, 12, 35))):
                slot = (slot + rng.randint(1, 4)) % TOP
                slots.append(slot)
            recs = records_for(slots, rng)
        if k < 0.4:
            h.step(recs, sync=True)
            shadow.add_records(recs)
            shadow.feed(b"")
            pend = shadow.pending
            lo = rng.randrange(0, len(pend)) if pend and rng.random() < 0.9 else 0
            win = [(s_, rng.getrandbits(1), 0) for s_, _, _ in pend[lo:lo + rng.randint(1, 32)]]
            ans = [a for a in answers_for([rec(*w) for w in win], 0.6, rng) if rng.random() < 0.85]
            if rng.random() < 0.3 or not ans:
                ans.append(((slot + rng.choice((-500, 1, 7))) % TOP, P.answer_byte(1, 0, 0)))
            h.apply(ans[:32])
        else:
            h.step(recs, sync=False)
            shadow.add_records(recs)
            if k < 0.6:
                h.write(BR["SCRATCH"].addr, rng.getrandbits(32))
            elif k < 0.8:
                h.read(rng.choice((BR["SCRATCH"].addr, BR["RX_FRAMES"].addr, 0x13)), rng.choice((1, 2, 8)))
            else:
                h.raw(bytes(rng.choice((FLAG, 0x7D, 0x00, rng.getrandbits(8))) for _ in range(rng.randint(1, 20))))
                h.write(BR["SEED_LO"].addr, 1)
        shadow.feed(bytes(h.steps[-1][1]))
    msgs, res, model = run(h, role="bob", ctrl=ctrl, exact=False, pending_depth=depth, seed=seed,
                           tx_ready_p=rng.choice((1.0, 0.6)), rx_valid_p=0.8, rec_valid_p=0.5)
    c = model.sift_counts
    assert sum(c["sifted"]) > 10 and c["unanswered"] > 0 and c["unmatched"] > 0
