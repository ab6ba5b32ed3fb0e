"""Alice: the decoy-state BB84 transmitter endpoint, composed from the ``hdl/`` blocks.

Pipeline per running clock (see docs/transmitter.md for the exact semantics):

* stage 0 (combinational): entropy words and health tests -> symbol per slot; sync bits
  from the slot counter;
* stage 1 (registered): choice memory write, counters, symbol digest, laser fire bits;
* stage 2 (registered in the pulse shapers): laser, sync and intensity-modulator pin words,
  and the pin digest.

The host reaches the registers (``gateware/regmap.py``) and the choice memory through the
framed host link (``docs/hostlink.md``) on the ``rx``/``tx`` byte streams.
"""
from __future__ import annotations

from amaranth import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream, data, crc
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..hdl.entropy import EntropySource, ENTROPY_BITS_PER_SLOT
from ..hdl.symbols import SymbolSelector, LaserDriver, INTENSITY_BLANK
from ..hdl.pulses import PulseShaper, check_geometry
from ..hdl.sync import SyncMarker, check_frame_log2
from ..hdl.choice_memory import ChoiceMemory
from ..hdl.regbank import RegisterBank
from ..hdl.counter_ram import CounterRam, drive_one_clock_late
from ..hdl.hostlink import LINK_COUNTER_REGISTERS, HostLink, connect_link_counters
from .regmap import ALICE_REGISTERS, ID_ALICE, REGMAP_VERSION, COUNTER48_NAMES, SIFT_COUNTER_NAMES

__all__ = ["Alice", "AliceParams", "symbol_digest_bits", "pin_digest_bits"]


# Counter RAM words (one 48-bit counter each) and the SNAP_* registers that read their shadows.
ALICE_COUNTER_WORDS = (COUNTER48_NAMES + SIFT_COUNTER_NAMES + ("SNAP_SIFT_LOST",)
                       + ("SNAP_RCT_FAILS", "SNAP_APT_FAILS"))
ALICE_RAM_REGISTERS = {
    **{f"{n}_{half}": (w, 32 * h) for w, n in enumerate(ALICE_COUNTER_WORDS[:-2])
       for h, half in enumerate(("LO", "HI"))},
    "SNAP_RCT_FAILS": (len(ALICE_COUNTER_WORDS) - 2, 0),
    "SNAP_APT_FAILS": (len(ALICE_COUNTER_WORDS) - 1, 0),
}


def _bytes_bits(n: int) -> int:
    return (n + 7) // 8 * 8


def symbol_digest_bits(slots_per_clock: int) -> int:
    """Width of one symbol-digest word: 4 bits per slot + 1 sync bit per slot, whole bytes."""
    return _bytes_bits(5 * slots_per_clock)


def pin_digest_bits(samples_per_clock: int, slots_per_clock: int) -> int:
    """Width of one pin-digest word: 4 laser words + sync word + 2-bit IM code per slot."""
    return _bytes_bits(5 * samples_per_clock + 2 * slots_per_clock)


class AliceParams:
    """Validated build parameters of the transmitter."""

    def __init__(self, samples_per_clock=4, slots_per_clock=4, choice_depth_slots=16384,
                 frame_log2=12, has_prng=True, has_qrng=True, has_digests=True):
        check_geometry(samples_per_clock, slots_per_clock)
        check_frame_log2(frame_log2)
        if choice_depth_slots & (choice_depth_slots - 1) or choice_depth_slots < 2 * slots_per_clock:
            raise ValueError(f"choice_depth_slots = {choice_depth_slots}: must be a power of two >= {2 * slots_per_clock}")
        if not (has_prng or has_qrng):
            raise ValueError("at least one entropy source (PRNG or QRNG) must be built in")
        self.samples_per_clock = samples_per_clock
        self.slots_per_clock = slots_per_clock
        self.choice_depth_slots = choice_depth_slots
        self.frame_log2 = frame_log2
        self.has_prng = has_prng
        self.has_qrng = has_qrng
        self.has_digests = bool(has_digests)

    @classmethod
    def from_config(cls, gw) -> "AliceParams":
        """From a :class:`qkdlink.host.config.GatewareConfig`."""
        return cls(gw.samples_per_clock, gw.slots_per_clock, gw.choice_memory_depth_slots,
                   gw.sync_frame_log2, has_prng=True, has_qrng=True)

    @property
    def build_word(self) -> int:
        """Value of the BUILD register."""
        r = ALICE_REGISTERS["BUILD"]
        fields = {"SAMPLES_PER_CLOCK": self.samples_per_clock, "SLOTS_PER_CLOCK": self.slots_per_clock,
                  "LOG2_CHOICE_DEPTH": ceil_log2(self.choice_depth_slots), "FRAME_LOG2": self.frame_log2,
                  "HAS_PRNG": int(self.has_prng), "HAS_QRNG": int(self.has_qrng),
                  "HAS_DIGESTS": int(self.has_digests)}
        return sum(v << r.field(k).offset for k, v in fields.items())

    def as_dict(self) -> dict:
        return dict(samples_per_clock=self.samples_per_clock, slots_per_clock=self.slots_per_clock,
                    choice_depth_slots=self.choice_depth_slots, frame_log2=self.frame_log2,
                    has_prng=self.has_prng, has_qrng=self.has_qrng, has_digests=self.has_digests)


class Alice(wiring.Component):
    """The transmitter top (board-independent).

    Ports: ``rx``/``tx`` host-link byte streams; ``qrng`` entropy stream (32 bits per slot);
    ``laser`` four S-sample trigger words (H, V, D, A); ``sync`` S-sample sync word;
    ``im_code`` 2-bit intensity-modulator code per slot (0 signal, 1 decoy, 2 vacuum).
    """

    def __init__(self, params: AliceParams | None = None, **kwargs):
        self.params = p = params or AliceParams(**kwargs)
        S, P = p.samples_per_clock, p.slots_per_clock
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "qrng": In(stream.Signature(ENTROPY_BITS_PER_SLOT * P)),
            "laser": Out(data.ArrayLayout(S, 4)),
            "sync": Out(S),
            "im_code": Out(data.ArrayLayout(2, P)),
        })

    def elaborate(self, platform):
        p = self.params
        S, P = p.samples_per_clock, p.slots_per_clock
        m = Module()

        m.submodules.regs = regs = RegisterBank(ALICE_REGISTERS, ALICE_RAM_REGISTERS, len(ALICE_COUNTER_WORDS), 48,
                                                    live_registers=LINK_COUNTER_REGISTERS,
                                                    read_latency=2)
        m.submodules.link = link = HostLink(choice_query=True, sift_query=True, read_latency=2)
        m.submodules.entropy = ent = EntropySource(P, has_prng=p.has_prng, has_qrng=p.has_qrng)
        m.submodules.symbols = sel = SymbolSelector(P)
        m.submodules.sync_marker = sync = SyncMarker(P, p.frame_log2)
        m.submodules.choices = mem = ChoiceMemory(P, p.choice_depth_slots)
        m.submodules.laser_shaper = lasers = PulseShaper(S, P, 4)
        m.submodules.sync_shaper = sync_shaper = PulseShaper(S, P, 1)

        # Host link <-> registers, choice memory, byte streams.
        wiring.connect(m, link.bus, regs.bus)
        wiring.connect(m, link.choice_query, mem.query)
        wiring.connect(m, mem.answer, link.choice_answer)
        wiring.connect(m, wiring.flipped(self.rx), link.rx)
        wiring.connect(m, link.tx, wiring.flipped(self.tx))
        connect_link_counters(m, link, regs)

        def field(reg: str, name: str):
            return getattr(regs, reg.lower())[ALICE_REGISTERS[reg].field(name).offset]

        snapshot, clear = field("CMD", "SNAPSHOT"), field("CMD", "CLEAR_COUNTERS")
        # CLEAR_ALARM and LOAD_SEED reach the entropy stage one clock after their strobe: they
        # fan out to every lane's health tests and PRNG state, and the full-rate build's
        # critical path ran from the strobe register across the die (host commands are frames
        # apart, so the clock is invisible to the host).
        clear_alarm, load_seed = Signal(), Signal()
        m.d.sync += [clear_alarm.eq(field("CMD", "CLEAR_ALARM")), load_seed.eq(field("CMD", "LOAD_SEED"))]
        run_bit, source_qrng = field("CTRL", "RUN"), field("CTRL", "SOURCE_QRNG")

        # Stage 0: run control, slot counter, entropy, symbols, sync bits.
        # `running` is registered (it fans out to every stage-0 block): it is computed from the
        # slot counter's next value, so emission still stops exactly when the counter reaches
        # STOP_AT_SLOT; a CTRL or STOP_AT_SLOT write takes effect one clock later.
        # `next_slot_p` = next_slot + P (mod 2^48) is kept beside the counter, so the next
        # value is a multiplexer and the stop compare the only carry chain before `running`
        # (the adder and the compare in series were the ECPIX-5's 148.8 MHz path).
        next_slot = Signal(48)
        next_slot_p = Signal(48, init=P)
        slot_after = Signal(48)
        stop_at = Cat(regs.stop_at_slot_lo, regs.stop_at_slot_hi)
        running = Signal()
        m.d.comb += slot_after.eq(Mux(clear, 0, Mux(running, next_slot_p, next_slot)))
        m.d.sync += [
            next_slot.eq(slot_after),
            next_slot_p.eq(Mux(clear, P, Mux(running, next_slot_p + P, next_slot_p))),
            running.eq(run_bit & ((stop_at == 0) | (slot_after < stop_at))),
        ]

        m.d.comb += [
            ent.run.eq(running),
            ent.select_qrng.eq(source_qrng),
            ent.seed.eq(Cat(regs.seed_lo, regs.seed_hi)),
            ent.load_seed.eq(load_seed),
            ent.rct_cutoff.eq(regs.health_rct_cutoff),
            ent.apt_cutoff.eq(regs.health_apt_cutoff),
            ent.clear_alarm.eq(clear_alarm),
            sel.words.eq(ent.words),
            sel.ok.eq(1),           # blanking is applied after the stage-1 register (below)
            sel.pz_q15.eq(regs.pz_q15),
            sel.t_signal_q15.eq(regs.t_signal_q15),
            sel.t_decoy_q15.eq(regs.t_decoy_q15),
            sync.slot_base.eq(next_slot),
        ]
        wiring.connect(m, wiring.flipped(self.qrng), ent.qrng)

        # Stage 1 registers.
        s1_valid = Signal()
        s1_slot = Signal(48)
        s1_codes = Signal(4 * P)        # the slot codes, blank where the entropy was not ok
        s1_raw = Signal(4 * P)          # the selector's codes as if the entropy were ok
        s1_ok = Signal()
        s1_sync = Signal(P)
        s1_underrun = Signal()
        s1_rct = Signal(P)
        s1_apt = Signal(P)
        m.d.sync += [
            s1_valid.eq(running & ~clear),
            s1_slot.eq(next_slot),
            s1_raw.eq(sel.symbols.as_value()),
            s1_ok.eq(ent.ok_unless_fire),
            s1_sync.eq(sync.fire),
            s1_underrun.eq(ent.underrun & ~clear),
            s1_rct.eq(ent.rct_fire),
            s1_apt.eq(ent.apt_fire),
        ]

        # Blanking after the register: the health tests' fire of this word reaches `ok` late
        # in the clock (the full-rate ECP5 build's critical path ran from the sample compare
        # through the alarm into every code register), so `ok` without this clock's fires and
        # the fires are registered beside the codes and combined here, where the blank code is
        # selected. Same codes, same clock as before.
        blank_codes = Cat(Const(INTENSITY_BLANK << 2, 4) for _ in range(P))
        s1_entropy_ok = Signal()
        m.d.comb += [
            s1_entropy_ok.eq(s1_ok & ~s1_rct.any() & ~s1_apt.any()),
            s1_codes.eq(Mux(s1_entropy_ok, s1_raw, blank_codes)),
        ]

        m.d.comb += [
            mem.write.eq(s1_valid),
            mem.slot_base.eq(s1_slot),
            mem.symbols.eq(s1_codes),
            mem.clear.eq(clear),
        ]

        # Symbol digest (CRC-32 of symbols | sync bits per running clock), if built in.
        if p.has_digests:
            m.submodules.digest_symbols = dsym = crc.catalog.CRC32_ISO_HDLC(
                data_width=symbol_digest_bits(P)).create()
            m.d.comb += [
                dsym.start.eq(clear),
                dsym.valid.eq(s1_valid),
                dsym.data.eq(Cat(s1_codes, s1_sync)),
            ]

        # Stage 2: pulse shapers (registered outputs) and the IM code.
        m.submodules.laser_driver = drv = LaserDriver(P)
        m.d.comb += drv.symbols.eq(s1_codes)
        for ch in range(4):
            m.d.comb += lasers.fire[ch].eq(drv.fire[ch] & s1_valid.replicate(P))
        m.d.comb += sync_shaper.fire[0].eq(s1_sync & s1_valid.replicate(P))
        for shaper in (lasers, sync_shaper):
            m.d.comb += [
                shaper.active.eq(s1_valid),
                shaper.delay.eq(regs.pulse_delay_samples),
                shaper.width.eq(regs.pulse_width_samples),
            ]
        s2_valid = Signal()
        s2_im = Signal(2 * P)
        m.d.sync += [s2_valid.eq(s1_valid & ~clear), s2_im.eq(drv.im_code)]
        m.d.comb += [
            self.laser.eq(lasers.samples),
            self.sync.eq(sync_shaper.samples[0]),
            self.im_code.eq(s2_im),
        ]

        if p.has_digests:
            m.submodules.digest_pins = dpin = crc.catalog.CRC32_ISO_HDLC(data_width=pin_digest_bits(S, P)).create()
            m.d.comb += [
                dpin.start.eq(clear),
                dpin.valid.eq(s2_valid),
                dpin.data.eq(Cat(lasers.samples.as_value(), sync_shaper.samples.as_value(), s2_im)),
            ]

        # Counters and their snapshot shadows: a CounterRam (block RAM), one 48-bit word per
        # counter; the SNAP_* counter registers read the shadows. The 32-bit fail counters
        # are the low bits of their words. SNAP_SLOT counts like the slot counter above.
        def lane_code(lane):
            return s1_codes[4 * lane:4 * lane + 4]

        inc = {"SNAP_SLOT": (Mux(running, P, 0), P)}
        for i, iname in enumerate(("SIGNAL", "DECOY", "VACUUM")):
            for b, bname in enumerate("ZX"):
                inc[f"SNAP_SENT_{iname}_{bname}"] = (Mux(s1_valid, sum(
                    (lane_code(l)[2:4] == i) & (lane_code(l)[1] == b) for l in range(P)), 0), P)
        inc["SNAP_BLANK"] = (Mux(s1_valid, sum(lane_code(l)[2:4] == INTENSITY_BLANK for l in range(P)), 0), P)
        inc["SNAP_UNDERRUN"] = (Mux(s1_valid & s1_underrun, P, 0), P)
        inc["SNAP_CHOICE_LOST"] = (mem.lost, 1)
        for k, name in enumerate(SIFT_COUNTER_NAMES):
            pulse = link.sift_detected if "DETECTED" in name else link.sift_sifted
            inc[name] = (pulse & (link.sift_class == k % 6), 1)
        inc["SNAP_SIFT_LOST"] = (link.sift_lost, 1)
        inc["SNAP_RCT_FAILS"] = (sum(s1_rct[l] for l in range(P)), P)
        inc["SNAP_APT_FAILS"] = (sum(s1_apt[l] for l in range(P)), P)
        assert tuple(inc) == ALICE_COUNTER_WORDS
        m.submodules.counters = cram = CounterRam(len(inc), 48, tuple(mx for _, mx in inc.values()))
        # As in Bob, the counter inputs pass one register stage (the full-rate build's critical
        # path ran from the stage-1 codes through the sums into the accumulators); the
        # undelayed commands count as busy, so the host link's acknowledgement still waits
        # for the sweep.
        drive_one_clock_late(m, cram, (v for v, _ in inc.values()), clear, snapshot)
        m.d.comb += [
            cram.r_en.eq(regs.ram_en),
            cram.r_addr.eq(regs.ram_addr),
            regs.ram_data.eq(cram.r_data),
            regs.busy.eq(cram.busy | clear | snapshot),
        ]

        # Digest shadows (0 without digests) and status.
        if p.has_digests:
            snap_dsym = Signal(32)
            snap_dpin = Signal(32)
            with m.If(snapshot):
                m.d.sync += [snap_dsym.eq(dsym.crc), snap_dpin.eq(dpin.crc)]
            m.d.comb += [
                regs.snap_digest_symbols.eq(snap_dsym),
                regs.snap_digest_pins.eq(snap_dpin),
            ]
        m.d.comb += [
            regs.id.eq(ID_ALICE),
            regs.version.eq(REGMAP_VERSION),
            regs.build.eq(p.build_word),
            regs.status.eq(Cat(running, ent.alarm_rct, ent.alarm_apt)),
        ]
        return m

