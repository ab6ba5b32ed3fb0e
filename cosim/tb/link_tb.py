"""cocotb test of Alice + Bob through an ideal channel, with hardware sifting at both ends.

Driven by :func:`qkdlink.cosim.link.run_link_cosim`. Alice emits in bursts (STOP_AT_SLOT)
short enough for her choice memory; after each burst the testbench, as the two hosts,
forwards Bob's DETECTIONS to Alice as SIFT_QUERY, Alice's SIFT_ANSWER to Bob as SIFT_APPLY,
and keeps both ends' SIFTED_KEY entries. Python wakes per burst and per message only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles

from qkdlink.cosim.alice_sequence import setup_writes, burst_writes, unpack_snapshot, SNAP_FIRST, SNAP_COUNT, RUN, SNAPSHOT
from qkdlink.cosim.alice_host import record_queries
from qkdlink.cosim.bob_sequence import setup_writes as bob_setup_writes
from qkdlink.cosim.tb.hostlink_driver import HostLinkDriver
from qkdlink.cosim.tb.bob_tb import take_records
from qkdlink.gateware import protocol as proto
from qkdlink.gateware.regmap import BOB_REGISTERS as B, ALICE_REGISTERS as A

CLOCK_PERIOD_NS = 2


def _bit(reg, name):
    return 1 << reg.field(name).offset


async def read_bob_counters(bob: HostLinkDriver) -> dict:
    await bob.write(B["CMD"].addr, _bit(B["CMD"], "SNAPSHOT"))
    names = ["SNAP_LOCAL_SLOT", "SNAP_DETECTED_Z", "SNAP_DETECTED_X", "SNAP_UNLOCKED_DETECTIONS", "SNAP_DOUBLE",
             "SNAP_CROSS", "SNAP_SUPPRESSED"]
    out = {}
    for n in names:
        lo, hi = await bob.read(B[f"{n}_LO"].addr, 2)
        out[n] = lo | hi << 32
    out["locks"] = (await bob.read(B["SNAP_LOCK_ACQUIRED"].addr, 2))
    out["SNAP_DIGEST_RECORDS"] = (await bob.read(B["SNAP_DIGEST_RECORDS"].addr))[0]
    return out


@cocotb.test()
async def link_sifting(dut):
    spec = json.loads(Path(os.environ["QKDLINK_TB_SPEC"]).read_text())
    alice = HostLinkDriver(dut.alice_pump, clock_period_ns=CLOCK_PERIOD_NS)
    bob = HostLinkDriver(dut.bob_pump, clock_period_ns=CLOCK_PERIOD_NS)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    for addr, value in setup_writes(spec["alice"]):
        await alice.write(addr, value)
    for addr, value in bob_setup_writes(spec["bob"]):
        await bob.write(addr, value)

    alice_key, bob_key, answers_total, records_total = [], [], [], 0

    async def sift_new_detections():
        nonlocal records_total
        records = take_records(bob)
        records_total += len(records)
        queries = record_queries(records)
        for i in range(0, len(queries), 32):
            ans, key = await alice.request(proto.MsgType.SIFT_QUERY, proto.sift_query(queries[i:i + 32]), answers=2)
            assert isinstance(ans, proto.SiftAnswer) and isinstance(key, proto.SiftedKey), (ans, key)
            alice_key.extend(key.entries)
            answers_total.extend(ans.entries)
            bkey = await bob.request(proto.MsgType.SIFT_APPLY, proto.sift_apply(list(ans.entries)))
            assert isinstance(bkey, proto.SiftedKey), bkey
            bob_key.extend(bkey.entries)

    # Alice emits continuously up to the stop slot while the hosts sift concurrently.
    for addr, value in burst_writes(spec["slots"]):
        await alice.write(addr, value)
    await alice.write(*RUN)
    # Bob starts after Alice, as light arrives after it leaves: no detection can name a slot
    # Alice has not emitted yet.
    await bob.write(B["CTRL"].addr, _bit(B["CTRL"], "RUN") | _bit(B["CTRL"], "RECORDS"))
    running = True
    while running:
        await bob.settle(spec["poll_clocks"])
        await sift_new_detections()
        running = bool((await alice.read(A["STATUS"].addr))[0] & 1)
    await bob.settle(400)                      # fibre, Bob's pipeline, last DETECTIONS frames
    await sift_new_detections()

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
        "bob_sift_regs": bob_sift_regs,
    }))
