"""cocotb test of Alice + Bob through an ideal channel, with hardware sifting at both ends.

Driven by :func:`qkdlink.cosim.link.run_link_cosim` and
:func:`qkdlink.cosim.fulllink.run_full_link`. Alice emits continuously up to a stop slot
(STOP_AT_SLOT); every ``poll_clocks`` clocks, well inside her choice memory, the testbench,
as the two hosts, forwards Bob's DETECTIONS to Alice as SIFT_QUERY, Alice's SIFT_ANSWER to
Bob as SIFT_APPLY, and keeps both ends' SIFTED_KEY entries. The hosts work as a pipeline:
at each poll they send what is due and take what has arrived, without waiting for answers,
so Python wakes about once per poll interval; the link pumps move 32 bytes per VPI access.

With ``QKDLINK_TB_TRAFFIC=FILE`` set, the testbench also writes what it did to the design —
every reset write and every byte queued into either link pump, with its simulation time —
and the bytes both pumps captured, so that :mod:`qkdlink.cosim.raw_verilator` can replay
exactly the same run without Python.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles

from qkdlink.cosim.alice_sequence import setup_writes, burst_writes, unpack_snapshot, SNAP_FIRST, SNAP_COUNT, RUN, SNAPSHOT
from qkdlink.cosim.bob_sequence import setup_writes as bob_setup_writes
from qkdlink.cosim.tb.hostlink_driver import HostLinkDriver, LinkTimeout, UNSOLICITED
from qkdlink.gateware import protocol as proto
from qkdlink.gateware.regmap import BOB_REGISTERS as B, ALICE_REGISTERS as A

CLOCK_PERIOD_NS = 2


class WideHostLinkDriver(HostLinkDriver):
    """:class:`HostLinkDriver` for a ``link_pump`` with ``word_bytes`` bytes per ring entry.

    One VPI access moves a whole entry, and entry handles are looked up once: per-byte
    element accesses (a new cocotb handle each) were most of the testbench's wall time. The
    input ring's content is mirrored in Python, so a partly filled entry is rewritten with
    the bytes it already holds.
    """

    def __init__(self, pump, *, word_bytes: int | None = None, **kwargs):
        super().__init__(pump, **kwargs)
        if word_bytes is None:                      # from the pump's entry width
            word_bytes = len(pump.in_mem[0]) // 8
        if word_bytes < 1 or word_bytes & (word_bytes - 1) or self.depth % word_bytes:
            raise ValueError(f"word_bytes {word_bytes}: not a power of two dividing depth {self.depth}")
        self.word_bytes = word_bytes
        self._ring = bytearray(self.depth)          # what the input ring holds
        self._handles = {}

    @property
    def pending_answers(self) -> list:
        """Answer frames collected and not yet taken."""
        return self._answers

    def post(self, msg_type: int, payload: bytes) -> int:
        """Queue one request frame without waiting; returns its sequence number."""
        seq = self._next_seq()
        self.send(proto.encode_frame(msg_type, seq, payload))
        return seq

    def take_queries(self) -> list[tuple[int, int]]:
        """(slot, basis) of every detection record received since the last call (docs/receiver.md).

        Kept here rather than imported (``alice_host.record_queries``) so that the simulator
        process does not import numpy: a quarter second of every run's start-up."""
        slot_mask = (1 << proto.SLOT_BITS) - 1
        out = [(r & slot_mask, (r >> proto.RECORD_BASIS_BIT) & 1)
               for frame in self.unsolicited for r in proto.parse_response(frame).records]
        self.unsolicited.clear()
        return out

    def take_answers(self, n: int, seq: int) -> list:
        """The ``n`` oldest collected answers, parsed; all must answer request ``seq``."""
        frames, self._answers = self._answers[:n], self._answers[n:]
        parsed = [proto.parse_response(f) for f in frames]
        for a in parsed:
            if a.req_seq != seq:
                raise AssertionError(f"answer {a} to seq {a.req_seq}, expected {seq}")
        return parsed

    def _entry(self, mem, name: str, index: int):
        key = (name, index)
        h = self._handles.get(key)
        if h is None:
            h = self._handles[key] = mem[index]
        return h

    def send(self, raw: bytes) -> None:
        consumed = int(self.pump.in_count.value)
        if self.sent + len(raw) - consumed > self.depth:
            raise AssertionError("link pump input ring overrun: the device is not taking bytes")
        W, ring, depth = self.word_bytes, self._ring, self.depth
        start, n = self.sent % depth, len(raw)
        head = min(n, depth - start)
        ring[start:start + head] = raw[:head]
        ring[:n - head] = raw[head:]
        mem = self.pump.in_mem
        for w in range(self.sent // W, (self.sent + len(raw) + W - 1) // W):
            at = (w * W) % depth
            self._entry(mem, "in", at // W).value = int.from_bytes(ring[at:at + W], "little")
        self.sent += len(raw)
        self.pump.in_len.value = self.sent

    def collect(self) -> None:
        count = int(self.pump.out_count.value)
        if count - self.taken > self.depth:
            raise AssertionError(f"link pump capture ring overrun: {count - self.taken} bytes unread")
        if count == self.taken:
            return
        W, mem, data = self.word_bytes, self.pump.out_mem, bytearray()
        pos = self.taken
        while pos < count:
            at = pos % self.depth
            word = int(self._entry(mem, "out", at // W).value).to_bytes(W, "little")
            lo = at % W
            hi = min(W, lo + count - pos)
            data += word[lo:hi]
            pos += hi - lo
        self.taken = count
        for frame in self.decoder.feed(bytes(data)):
            if frame.type in UNSOLICITED:
                self.unsolicited.append(frame)
            else:
                self._answers.append(frame)


# Traffic-log channels (cosim/raw_verilator.py reads the same numbers).
TRAFFIC_ALICE, TRAFFIC_BOB, TRAFFIC_RST = 0, 1, 2


class TrafficLog:
    """Everything the testbench writes into the design, with simulation times (steps)."""

    def __init__(self):
        self.writes: list[list] = []             # [time_steps, channel, hex bytes or value]
        self.captured = {TRAFFIC_ALICE: bytearray(), TRAFFIC_BOB: bytearray()}

    def attach(self, driver: HostLinkDriver, channel: int) -> None:
        """Log ``driver``'s queued bytes and tap the bytes it decodes."""
        send, decoder, sink = driver.send, driver.decoder, self.captured[channel]

        def logged_send(raw: bytes) -> None:
            self.writes.append([get_sim_time("step"), channel, bytes(raw).hex()])
            send(raw)

        class _Tap:
            def feed(self, data):
                sink.extend(data)
                return decoder.feed(data)

        driver.send = logged_send
        driver.decoder = _Tap()

    def reset(self, dut, value: int) -> None:
        self.writes.append([get_sim_time("step"), TRAFFIC_RST, value])
        dut.rst.value = value

    def save(self, path: Path, **extra) -> None:
        Path(path).write_text(json.dumps({
            "writes": self.writes, "end_steps": get_sim_time("step"),
            "captured": {str(k): v.hex() for k, v in self.captured.items()}, **extra}))


class _NoLog:
    def reset(self, dut, value: int) -> None:
        dut.rst.value = value


def _bit(reg, name):
    return 1 << reg.field(name).offset


async def read_bob_counters(bob: HostLinkDriver) -> dict:
    await bob.write(B["CMD"].addr, _bit(B["CMD"], "SNAPSHOT"))
    names = ["SNAP_LOCAL_SLOT", "SNAP_DETECTED_Z", "SNAP_DETECTED_X", "SNAP_UNLOCKED_DETECTIONS", "SNAP_DOUBLE",
             "SNAP_CROSS", "SNAP_SUPPRESSED", "SNAP_RECORDS_DROPPED", "SNAP_OUT_OF_GATE"]
    out = {}
    for n in names:
        lo, hi = await bob.read(B[f"{n}_LO"].addr, 2)
        out[n] = lo | hi << 32
    out["locks"] = (await bob.read(B["SNAP_LOCK_ACQUIRED"].addr, 2))
    for n in ("SNAP_LOCK_ACQUIRED", "SNAP_LOCK_LOST", "SNAP_SYNC_GOOD", "SNAP_SYNC_MISMATCH", "SNAP_SYNC_SLIPS"):
        out[n] = (await bob.read(B[n].addr))[0]
    drift = (await bob.read(B["SYNC_DRIFT_SLOTS"].addr))[0]
    out["SYNC_DRIFT_SLOTS"] = drift - (1 << 32) if drift >> 31 else drift
    out["SNAP_DIGEST_RECORDS"] = (await bob.read(B["SNAP_DIGEST_RECORDS"].addr))[0]
    return out


@cocotb.test()
async def link_sifting(dut):
    cpu_start = time.process_time()           # the simulator process's start-up so far
    spec = json.loads(Path(os.environ["QKDLINK_TB_SPEC"]).read_text())
    alice = WideHostLinkDriver(dut.alice_pump, clock_period_ns=CLOCK_PERIOD_NS)
    bob = WideHostLinkDriver(dut.bob_pump, clock_period_ns=CLOCK_PERIOD_NS)
    traffic_path = os.environ.get("QKDLINK_TB_TRAFFIC")
    log = TrafficLog() if traffic_path else _NoLog()
    if traffic_path:
        log.attach(alice, TRAFFIC_ALICE)
        log.attach(bob, TRAFFIC_BOB)
    log.reset(dut, 1)
    await ClockCycles(dut.clk, 4)
    log.reset(dut, 0)
    await ClockCycles(dut.clk, 2)

    for addr, value in setup_writes(spec["alice"]):
        await alice.write(addr, value)
    for addr, value in bob_setup_writes(spec["bob"]):
        await bob.write(addr, value)

    alice_key, bob_key, answers_total = [], [], []
    records_total = 0
    queries_out, applies_out = [], []           # sequence numbers of requests in flight

    def exchange() -> None:
        """One host turn, without waiting: Alice's answers that arrived go to Bob (SIFT_APPLY),
        Bob's SIFTED_KEY answers are kept, new detections are sent to Alice (SIFT_QUERY)."""
        nonlocal records_total
        alice.collect()
        while queries_out and len(alice.pending_answers) >= 2:
            ans, key = alice.take_answers(2, queries_out.pop(0))
            assert isinstance(ans, proto.SiftAnswer) and isinstance(key, proto.SiftedKey), (ans, key)
            alice_key.extend(key.entries)
            answers_total.extend(ans.entries)
            applies_out.append(bob.post(proto.MsgType.SIFT_APPLY, proto.sift_apply(list(ans.entries))))
        bob.collect()
        while applies_out and bob.pending_answers:
            bkey, = bob.take_answers(1, applies_out.pop(0))
            assert isinstance(bkey, proto.SiftedKey), bkey
            bob_key.extend(bkey.entries)
        queries = bob.take_queries()
        records_total += len(queries)
        for i in range(0, len(queries), 32):
            queries_out.append(alice.post(proto.MsgType.SIFT_QUERY, proto.sift_query(queries[i:i + 32])))

    async def drain() -> None:
        """Wait until every sifting request in flight is answered (before blocking requests)."""
        waited = 0
        while queries_out or applies_out:
            if waited >= alice.timeout_cycles:
                raise LinkTimeout(f"{len(queries_out)} SIFT_QUERY and {len(applies_out)} SIFT_APPLY "
                                  f"unanswered after {waited} cycles")
            await bob.settle(alice.poll_cycles)
            waited += alice.poll_cycles
            exchange()

    # Alice emits continuously up to the stop slot while the hosts sift concurrently. Each
    # host turn sends what is due and takes what has arrived, so Python wakes once per poll.
    for addr, value in burst_writes(spec["slots"]):
        await alice.write(addr, value)
    t_run, cpu_run = time.perf_counter(), time.process_time()
    await alice.write(*RUN)
    # Alice stops by herself at the stop slot; her STATUS is read only from when that is due.
    stop_due_ns = get_sim_time("ns") + spec["slots"] // spec["slots_per_clock"] * CLOCK_PERIOD_NS
    # Bob starts after Alice, as light arrives after it leaves: no detection can name a slot
    # Alice has not emitted yet.
    await bob.write(B["CTRL"].addr, _bit(B["CTRL"], "RUN") | _bit(B["CTRL"], "RECORDS"))
    running = True
    while running:
        await bob.settle(spec["poll_clocks"])
        exchange()
        if get_sim_time("ns") >= stop_due_ns:
            await drain()
            running = bool((await alice.read(A["STATUS"].addr))[0] & 1)
    await bob.settle(400)                      # fibre, Bob's pipeline, last DETECTIONS frames
    exchange()
    await drain()
    run_wall_s, run_cpu_s = time.perf_counter() - t_run, time.process_time() - cpu_run
    cpu_profile = {"startup_cpu_s": cpu_start, "setup_cpu_s": cpu_run - cpu_start, "run_cpu_s": run_cpu_s}

    # Choice-memory overrun: slot 0 is long overwritten; Alice must answer LOST and count it.
    lost_ans, lost_key = await alice.request(proto.MsgType.SIFT_QUERY, proto.sift_query([(0, 0)]), answers=2)

    await alice.write(*SNAPSHOT)
    alice_snap = unpack_snapshot(await alice.read(SNAP_FIRST, SNAP_COUNT))
    sift_names = [n for n in (r.name for r in A) if n.startswith("SNAP_SIFT_")]
    alice_sift_regs = await alice.read(A[sift_names[0]].addr, len(sift_names))
    bob_counts = await read_bob_counters(bob)
    bob_sift_regs = await bob.read(B["SNAP_SIFT_DETECTED_SIGNAL_Z_LO"].addr, 28)
    Path(os.environ["QKDLINK_TB_OUT"]).write_text(json.dumps({
        "alice_key": [list(e) for e in alice_key], "bob_key": [list(e) for e in bob_key],
        "answers": [list(e) for e in answers_total], "records": records_total,
        "lost_probe": [list(e) for e in lost_ans.entries], "lost_probe_key": [list(e) for e in lost_key.entries],
        "alice_snapshot": alice_snap, "bob_counters": bob_counts,
        "alice_sift_regs": dict(zip(sift_names, alice_sift_regs)),
        "bob_sift_regs": bob_sift_regs, "run_wall_s": run_wall_s, "run_cpu_s": run_cpu_s,
        "end_steps": get_sim_time("step"),
    }))
    cpu_profile["final_cpu_s"] = time.process_time() - cpu_run - run_cpu_s
    cpu_profile["process_cpu_s"] = time.process_time()
    if traffic_path:
        log.save(Path(traffic_path), run_wall_s=run_wall_s, **cpu_profile)
