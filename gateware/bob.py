"""Bob: the decoy-state BB84 receiver endpoint, composed from the ``hdl/`` blocks.

Per clock (see docs/receiver.md):

* input stage: four detector words and the sync word (S samples each) enter the time tagger
  and the sync sampler while ``CTRL.RUN`` is set (``running`` output);
* tag stage, ``TimeTagger.LATENCY`` clocks later (a *running clock* of Bob): clicks ->
  detections per slot (squashing randomness from a seeded xorshift64 generator); sync bits ->
  sync receiver (lock, offset, clock-offset tracking); counters and fine-time histograms
  (block RAM, :class:`~qkdlink.hdl.counter_ram.CounterRam`);
* each detection while locked becomes a 64-bit record with Alice's slot index; one row of up
  to P records per clock enters the record FIFO, whose output feeds DETECTIONS frames on the
  host link. Sifting answers come back over the same link (SIFT_APPLY) and leave as key.
"""
from __future__ import annotations

from amaranth import Module, Signal, Cat, Mux
from amaranth.lib import wiring, stream, data, crc
from amaranth.lib.wiring import In, Out

from ..hdl.timetagger import TimeTagger
from ..hdl.sync_sampler import SyncSampler
from ..hdl.detection import DetectionCombiner
from ..hdl.sync_rx import SyncReceiver
from ..hdl.sync import check_frame_log2
from ..hdl.pulses import check_geometry
from ..hdl.histogram import FineTimeBins
from ..hdl.record_rows import RecordRowFifo
from ..hdl.record_fifo import pack_record_value
from ..hdl.squash_rng import SquashBits
from ..hdl.regbank import RegisterBank
from ..hdl.counter_ram import CounterRam, drive_one_clock_late
from ..hdl.hostlink import LINK_COUNTER_REGISTERS, HostLink, connect_link_counters
from .regmap import (BOB_REGISTERS, ID_BOB, REGMAP_VERSION, BOB_COUNTER48_NAMES, BOB_COUNTER32_NAMES,
                     SIFT_COUNTER_NAMES, HISTOGRAM_BINS)

__all__ = ["Bob", "BobParams", "record_digest_bits", "DETECTORS"]

DETECTORS = ("H", "V", "D", "A")

_BOB_C32 = tuple(n for n in BOB_COUNTER32_NAMES if n != "SNAP_DIGEST_RECORDS")


def bob_histogram_bins(params: "BobParams") -> tuple[tuple[int, int], ...]:
    """``(detector, bin)`` of the histogram bins that can count: ``K = S / P`` per detector
    (fine times are ``0 .. K - 1``), none without histograms."""
    bins = params.samples_per_clock // params.slots_per_clock if params.has_histogram else 0
    return tuple((c, b) for c in range(len(DETECTORS)) for b in range(bins))


def bob_counter_words(params: "BobParams") -> tuple[str, ...]:
    """Counter RAM words (one 48-bit counter each), by register name: the SNAP_* counters and
    the histogram bins that can count; the other ``HIST_*`` registers read 0 without a word."""
    return BOB_COUNTER48_NAMES + _BOB_C32 + tuple(f"HIST_{DETECTORS[c]}_{b}" for c, b in bob_histogram_bins(params))


def bob_ram_registers(words: tuple[str, ...]) -> dict:
    """RAM-backed registers of the counter RAM words ``words``: {register: (word, lsb)}."""
    return {**{f"{n}_{half}": (w, 32 * h) for w, n in enumerate(BOB_COUNTER48_NAMES)
               for h, half in enumerate(("LO", "HI"))},
            **{n: (words.index(n), 0) for n in words[len(BOB_COUNTER48_NAMES):]}}


def record_digest_bits(slots_per_clock: int) -> int:
    """Width of one record-digest word: P records of 64 bits and the P-bit lane mask."""
    return (64 * slots_per_clock + slots_per_clock + 7) // 8 * 8


class BobParams:
    """Validated build parameters of the receiver."""

    def __init__(self, samples_per_clock=4, slots_per_clock=4, frame_log2=12, record_rows=256,
                 pending_depth=1024, max_delay_samples=None, has_digests=True, has_histogram=True):
        check_geometry(samples_per_clock, slots_per_clock)
        check_frame_log2(frame_log2)
        for name, v in (("record_rows", record_rows), ("pending_depth", pending_depth)):
            if v < 2 or v & (v - 1):
                raise ValueError(f"{name} = {v}: must be a power of two >= 2")
        self.samples_per_clock = samples_per_clock
        self.slots_per_clock = slots_per_clock
        self.frame_log2 = frame_log2
        self.record_rows = record_rows
        self.pending_depth = pending_depth
        self.max_delay_samples = 4 * samples_per_clock - 1 if max_delay_samples is None else max_delay_samples
        self.has_digests = bool(has_digests)
        self.has_histogram = bool(has_histogram)

    @classmethod
    def from_config(cls, gw) -> "BobParams":
        return cls(gw.samples_per_clock, gw.slots_per_clock, gw.sync_frame_log2)

    @property
    def build_word(self) -> int:
        r = BOB_REGISTERS["BUILD"]
        fields = {"SAMPLES_PER_CLOCK": self.samples_per_clock, "SLOTS_PER_CLOCK": self.slots_per_clock,
                  "FRAME_LOG2": self.frame_log2, "HAS_PRNG": 1, "HAS_DIGESTS": int(self.has_digests),
                  "HAS_HISTOGRAM": int(self.has_histogram)}
        return sum(v << r.field(k).offset for k, v in fields.items())

    def as_dict(self) -> dict:
        return dict(samples_per_clock=self.samples_per_clock, slots_per_clock=self.slots_per_clock,
                    frame_log2=self.frame_log2, record_rows=self.record_rows,
                    pending_depth=self.pending_depth, max_delay_samples=self.max_delay_samples,
                    has_digests=self.has_digests, has_histogram=self.has_histogram)


class Bob(wiring.Component):
    """The receiver top (board-independent).

    Ports: ``rx``/``tx`` host-link byte streams; ``det`` four S-sample detector words (H, V,
    D, A); ``sync_in`` the S-sample sync word; ``running`` high while inputs are tagged (a
    status LED, and the replay strobe of co-simulation test benches).
    """

    def __init__(self, params: BobParams | None = None, **kwargs):
        self.params = p = params or BobParams(**kwargs)
        S = p.samples_per_clock
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "det": In(data.ArrayLayout(S, 4)),
            "sync_in": In(S),
            "running": Out(1),
        })

    def elaborate(self, platform):
        p = self.params
        S, P = p.samples_per_clock, p.slots_per_clock
        m = Module()

        words = bob_counter_words(p)
        m.submodules.regs = regs = RegisterBank(BOB_REGISTERS, bob_ram_registers(words), len(words), 48,
                                                  live_registers=LINK_COUNTER_REGISTERS,
                                                  read_latency=2)
        m.submodules.link = link = HostLink(sift_apply=True, pending_depth=p.pending_depth, read_latency=2)
        m.submodules.tagger = tagger = TimeTagger(S, P, 4, p.max_delay_samples)
        m.submodules.sync_sampler = sampler = SyncSampler(S, P, p.max_delay_samples)
        m.submodules.squash_rng = squash = SquashBits(2 * P)
        m.submodules.combiner = comb = DetectionCombiner(P)
        m.submodules.sync_rx = srx = SyncReceiver(P, p.frame_log2)
        hist = None
        if p.has_histogram:
            m.submodules.histogram = hist = FineTimeBins(4, HISTOGRAM_BINS)
        m.submodules.records = rows = RecordRowFifo(P, p.record_rows)

        wiring.connect(m, link.bus, regs.bus)
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        wiring.connect(m, rows.r, link.records)
        connect_link_counters(m, link, regs)

        def field(reg: str, name: str):
            return getattr(regs, reg.lower())[BOB_REGISTERS[reg].field(name).offset]

        snapshot, clear = field("CMD", "SNAPSHOT"), field("CMD", "CLEAR_COUNTERS")
        clear_hist, relock = field("CMD", "CLEAR_HISTOGRAM"), field("CMD", "RELOCK")
        clear_overflow, load_seed = field("CMD", "CLEAR_OVERFLOW"), field("CMD", "LOAD_SEED")
        run_bit, records_on, record_bits = field("CTRL", "RUN"), field("CTRL", "RECORDS"), field("CTRL", "RECORD_BITS")
        m.d.comb += [
            self.running.eq(run_bit),
            link.records_enable.eq(records_on),
            link.record_bits.eq(record_bits),
        ]

        # Input stage.
        delays = (regs.delay_h_samples, regs.delay_v_samples, regs.delay_d_samples, regs.delay_a_samples)
        m.d.comb += [
            tagger.samples.eq(Mux(run_bit, self.det.as_value(), 0)),
            tagger.gate_offset.eq(regs.gate_offset_samples),
            tagger.gate_width.eq(regs.gate_width_samples),
            tagger.dead_samples.eq(regs.dead_time_samples),
            sampler.samples.eq(Mux(run_bit, self.sync_in, 0)),
            sampler.delay.eq(regs.delay_sync_samples),
        ]
        for c in range(4):
            m.d.comb += tagger.delay[c].eq(delays[c])

        # Tag stage: `running` is CTRL.RUN delayed like the tagger's outputs.
        assert SyncSampler.LATENCY == TimeTagger.LATENCY
        run_pipe = Signal(TimeTagger.LATENCY)
        m.d.sync += run_pipe.eq(Cat(run_bit, run_pipe[:-1]))
        running = run_pipe[-1]

        m.d.comb += [
            squash.seed.eq(Cat(regs.seed_lo, regs.seed_hi)),
            squash.load.eq(load_seed),
            squash.advance.eq(running),
            comb.random.eq(squash.bits),
            srx.bits.eq(sampler.bits),
            srx.run.eq(running),
            srx.loss_frames.eq(regs.sync_loss_frames),
            srx.track_slots.eq(regs.sync_track_slots),
            srx.relock.eq(relock),
        ]
        for c in range(4):
            m.d.comb += [
                comb.click[c].eq(tagger.click[c] & running),
                comb.lane[c].eq(tagger.lane[c]),
                comb.fine[c].eq(tagger.fine[c]),
            ]
            if hist is not None:
                m.d.comb += [hist.live[c].eq(tagger.live[c] & running), hist.fine[c].eq(tagger.fine[c])]

        # Records: detections while locked, numbered in Alice's slots. One register stage
        # (records and their mask) between the slot arithmetic and the FIFO write / digest.
        dets = comb.detections
        mask = Signal(P)
        rec_mask = Signal(P)
        rec_values = [Signal(64, name=f"record{lane}") for lane in range(P)]
        alice_base = Signal(48)
        m.d.comb += alice_base.eq(srx.local_slot + srx.offset)
        for lane in range(P):
            d = dets[lane]
            slot = Signal(48, name=f"alice_slot{lane}")
            m.d.comb += [
                slot.eq(alice_base + lane),
                mask[lane].eq(d.detected & srx.locked & running),
            ]
            m.d.sync += rec_values[lane].eq(Mux(mask[lane], pack_record_value(slot, d.basis, d.bit, d.fine,
                                                                              d.double | d.cross), 0))
            m.d.comb += rows.w_records[lane].eq(rec_values[lane])
        m.d.sync += rec_mask.eq(mask)
        m.d.comb += [
            rows.w_valid.eq(Mux(records_on, rec_mask, 0)),
            rows.clear_overflow.eq(clear_overflow),
        ]

        # Record digest: CRC-32 over every row of records produced (whether sent or not), if
        # built in.
        if p.has_digests:
            m.submodules.digest_records = dig = crc.catalog.CRC32_ISO_HDLC(
                data_width=record_digest_bits(P)).create()
            m.d.comb += [
                dig.start.eq(clear),
                dig.valid.eq(rec_mask.any()),
                dig.data.eq(Cat(rows.w_records.as_value(), rec_mask)),
            ]

        # Counters, histograms and their snapshot shadows: a CounterRam (block RAM), one 48-bit
        # word per counter; the SNAP_* and HIST_* registers read the shadows (32-bit ones the
        # low bits). Clear groups: 0 CLEAR_COUNTERS, 1 CLEAR_HISTOGRAM, 2 never (the local slot
        # counter, which counts like the sync receiver's).
        inc = {
            "SNAP_LOCAL_SLOT": (Mux(running, P, 0), P, 2),
            "SNAP_DETECTED_Z": (sum((dets[l].detected & ~dets[l].basis) & running for l in range(P)), P, 0),
            "SNAP_DETECTED_X": (sum((dets[l].detected & dets[l].basis) & running for l in range(P)), P, 0),
            "SNAP_DOUBLE": (sum((dets[l].detected & dets[l].double) & running for l in range(P)), P, 0),
            "SNAP_CROSS": (sum((dets[l].detected & dets[l].cross) & running for l in range(P)), P, 0),
            "SNAP_SUPPRESSED": (Mux(running, sum(tagger.suppressed[c] for c in range(4)), 0), 4 * S, 0),
            "SNAP_OUT_OF_GATE": (Mux(running, sum(tagger.out_of_gate[c] for c in range(4)), 0), 4, 0),
            "SNAP_RECORDS_DROPPED": (rows.dropped, P, 0),
            "SNAP_UNLOCKED_DETECTIONS": (sum(dets[l].detected & ~srx.locked & running for l in range(P)), P, 0),
        }
        for k, name in enumerate(SIFT_COUNTER_NAMES):
            pulse = link.sift_detected if "DETECTED" in name else link.sift_sifted
            inc[name] = (pulse & (link.sift_class == k % 6), 1, 0)
        inc["SNAP_SIFT_UNANSWERED"] = (link.sift_unanswered, 1, 0)
        inc["SNAP_SIFT_UNMATCHED"] = (link.sift_unmatched, 1, 0)
        inc.update({"SNAP_LOCK_ACQUIRED": (srx.lock_acquired, 1, 0), "SNAP_LOCK_LOST": (srx.lock_lost, 1, 0),
                    "SNAP_SYNC_GOOD": (srx.marker_good, 1, 0), "SNAP_SYNC_MISMATCH": (srx.marker_mismatch, 1, 0),
                    "SNAP_SYNC_SLIPS": (srx.marker_slip, 1, 0)})
        for c, b in bob_histogram_bins(p):
            inc[f"HIST_{DETECTORS[c]}_{b}"] = (hist.hits[c][b], 1, 1)
        assert tuple(inc) == words
        # Rare events get narrow accumulators (CounterRam min_gap): the sifting executor pulses
        # once per merge step (CMP -> ACT: >= 2 clocks); the sync receiver's pulses come from
        # valid markers, >= 16 slots apart (a 16-bit preamble match), or lock changes between them.
        sync_gap = max(1, 16 // P)
        gaps = {**{n: 2 for n in SIFT_COUNTER_NAMES + ("SNAP_SIFT_UNANSWERED", "SNAP_SIFT_UNMATCHED")},
                **{n: sync_gap for n in ("SNAP_LOCK_ACQUIRED", "SNAP_LOCK_LOST", "SNAP_SYNC_GOOD",
                                         "SNAP_SYNC_MISMATCH", "SNAP_SYNC_SLIPS")}}
        m.submodules.counters = cram = CounterRam(len(inc), 48, tuple(v[1] for v in inc.values()),
                                                  tuple(v[2] for v in inc.values()),
                                                  min_gap=tuple(gaps.get(n, 1) for n in inc))
        # The increments, clears and snapshot reach the counter RAM through one register stage
        # (all delayed alike, so the counted values are unchanged); the undelayed commands
        # count as busy, so the host link's acknowledgement still waits for the sweep.
        drive_one_clock_late(m, cram, (v[0] for v in inc.values()), Cat(clear, clear_hist, 0), snapshot)
        m.d.comb += [
            cram.r_en.eq(regs.ram_en),
            cram.r_addr.eq(regs.ram_addr),
            regs.ram_data.eq(cram.r_data),
            regs.busy.eq(cram.busy | clear | clear_hist | snapshot),
        ]

        # Digest shadow.
        if p.has_digests:
            snap_digest = Signal(32)
            with m.If(snapshot):
                m.d.sync += snap_digest.eq(dig.crc)
            m.d.comb += regs.snap_digest_records.eq(snap_digest)
        m.d.comb += [
            regs.id.eq(ID_BOB),
            regs.version.eq(REGMAP_VERSION),
            regs.build.eq(p.build_word),
            regs.status.eq(Cat(run_bit, srx.locked, rows.overflow)),
            regs.sync_offset_lo.eq(srx.offset[:32]),
            regs.sync_offset_hi.eq(srx.offset[32:]),
            regs.sync_drift_slots.eq(srx.drift_slots),
        ]
        return m
