"""Host-link endpoint: deframes requests, executes them, answers; Bob's DETECTIONS.

Implements ``docs/hostlink.md`` with the constants of :mod:`qkdlink.gateware.protocol`; the
bit-exact reference is :class:`qkdlink.gateware.protocol.DeviceModel` (same input bytes ->
same output bytes and counters; for Bob's unsolicited DETECTIONS see the timing contract in
the model's docstring).

Structure (one byte per clock on both streams, every stage registered):

* **receiver** (``rx``): hunts for a flag after reset, then destuffs and CRC-checks on the fly
  (:mod:`amaranth.lib.crc`, residue check). Every content byte is written into the receive
  buffer, a 256 x 8 :class:`~amaranth.lib.memory.Memory` (block RAM), at its content index;
  TYPE, SEQ and the first 7 payload bytes are also kept in registers (all that REG_* and
  CHOICE_QUERY need, and the SIFT count). The length is counted up to the oversize limit
  ``2 + RX_MAX_PAYLOAD + 2``; a position-in-entry counter checks the SIFT length rule
  (1 + 7k, k = 1..32) and SIFT_QUERY basis bytes on the fly. At a closing flag it classifies
  the frame (CHECK, one cycle), then waits until the dispatcher is idle and applies the
  verdict (APPLY, one cycle): counters, sequence-gap check, hand-off of the request.
  ``rx.ready`` is low during these two cycles and while it waits, and while a sifting
  executor still reads the previous request's entries from the receive buffer
  (``rx_hold``); otherwise the receiver keeps taking the bytes of the next frame while an
  answer is being sent. Counters therefore change only while the dispatcher is idle, which
  keeps register reads of the counters in stream order (as the model has them).
* **dispatcher**: one job at a time: a handed-over request goes to the core executor
  (REG_WRITE, REG_READ, CHOICE_QUERY, NAKs) or to a sifting executor
  (:mod:`qkdlink.hdl.sift_link`: Alice's SIFT_QUERY, Bob's SIFT_APPLY); with nothing handed
  over and no closed frame in CHECK/APPLY, Bob's DETECTIONS job runs if records wait. A job
  ends when its executor has handed over its last content byte and the framer is idle.
* **core executor**: REG_WRITE (one bus write, issued and acknowledged only while the bus
  reports no ``busy``), REG_READ (``count`` back-to-back bus reads
  into a 32 x 32-bit memory, then the answer), CHOICE_QUERY (a query issuer streams
  ``count`` slot indices to the choice memory while the answer streams the replies out),
  NAKs. Executors produce the unstuffed content bytes TYPE PAYLOAD; a one-byte pipeline
  register feeds the framer.
* **framer** (``tx``): opening flag, TYPE, the device SEQ (inserted here: 8 bits, 0 after
  reset, +1 per frame sent), PAYLOAD, CRC-16 over TYPE SEQ PAYLOAD, all stuffed, closing
  flag, from a registered output (``tx.valid`` never waits for ``tx.ready``).

Counters: 32-bit, wrapping.
"""
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import crc, stream, wiring
from amaranth.lib.wiring import In, Out

from qkdlink.gateware.protocol import (
    ESC, ESC_XOR, FLAG, LINK_COUNTER_NAMES, MAX_CHOICE_COUNT, MAX_READ_COUNT,
    REQUEST_PAYLOAD_LENGTH, RX_MAX_PAYLOAD, SIFT_ENTRY_BYTES, SIFT_MAX_ENTRIES, MsgType, NakCode,
    Status,
)
from qkdlink.hdl.bram import bram, read_port
from qkdlink.hdl.choice_memory import ChoiceAnswer
from qkdlink.hdl.live_counters import LiveCounters
from qkdlink.hdl.regbank import RegisterBusSignature
from qkdlink.hdl.sift_link import ENTRIES_OFFSET, AliceSift, BobSift

__all__ = ["HostLink"]

_RX_LIMIT = 2 + RX_MAX_PAYLOAD + 2                      # content bytes accepted (229)
_RX_KEEP = 2 + max(REQUEST_PAYLOAD_LENGTH.values())     # content bytes also kept in registers (9)
_RX_BUF_DEPTH = 256                                     # receive buffer (block RAM), bytes

# Receiver verdicts (CHECK -> APPLY).
(_V_OVERSIZE, _V_FRAMING, _V_TRUNCATED, _V_CRC, _V_UNKNOWN, _V_BAD_LENGTH, _V_WRITE, _V_READ,
 _V_CHOICE, _V_SIFT_NAK, _V_SIFT_QUERY, _V_SIFT_APPLY) = range(12)
# Answer kinds.
_R_NAK, _R_ACK, _R_READ, _R_CHOICE = range(4)
# Answer bodies.
_B_NONE, _B_WORDS, _B_ENTRIES = range(3)


#: The link counters as live registers of a RegisterBank (``live_registers``): {name: index}.
LINK_COUNTER_REGISTERS = {name.upper(): i for i, name in enumerate(LINK_COUNTER_NAMES)}


def connect_link_counters(m: Module, link: "HostLink", bank) -> None:
    """Serve ``bank``'s live registers (:data:`LINK_COUNTER_REGISTERS`) from ``link``'s counters."""
    m.d.comb += [link.counters_r_en.eq(bank.live_en), link.counters_r_addr.eq(bank.live_addr),
                 bank.live_data.eq(link.counters_r_data)]


def _special(byte):
    return (byte == FLAG) | (byte == ESC)


class HostLink(wiring.Component):
    """Host-link endpoint (see the module docstring and docs/hostlink.md).

    Ports: ``rx`` (bytes from the host), ``tx`` (bytes to the host), ``bus`` (register bus
    master) and the read port of the link counters (``rx_frames`` .. ``tx_frames``, in
    :data:`LINK_COUNTER_NAMES` order; a :class:`~qkdlink.hdl.live_counters.LiveCounters`):
    ``counters_r_en``, ``counters_r_addr`` (In, request clock), ``counters_r_data``
    (Out(32), two clocks later), for a register bank's live registers. ``link_counters`` is
    that component (``link_counters.peek(ctx)`` in simulator tests).

    * ``choice_query=True``: ``choice_query`` (48-bit slot indices out) and ``choice_answer``
      (:data:`~qkdlink.hdl.choice_memory.ChoiceAnswer` in, in query order), for CHOICE_QUERY.
    * ``sift_query=True`` (Alice; needs ``choice_query``): SIFT_QUERY through the same choice
      memory port, and the counter pulses ``sift_detected``, ``sift_sifted``, ``sift_class``
      (3 bits: ``2 * intensity + basis``), ``sift_lost``.
    * ``sift_apply=True`` (Bob): ``records`` (64-bit detection records in, from the record
      FIFO), ``record_bits`` and ``records_enable`` (CTRL.RECORD_BITS / CTRL.RECORDS), a
      pending queue of ``pending_depth`` detections (``pending_level`` out), DETECTIONS
      frames and SIFT_APPLY, and the counter pulses ``sift_detected``, ``sift_sifted``,
      ``sift_class``, ``sift_unanswered``, ``sift_unmatched``.

    A type whose option is off is an unknown type. Counter pulses are registered, one clock
    per counted entry (``sift_class`` qualifies ``sift_detected`` / ``sift_sifted``).
    """

    def __init__(self, *, choice_query: bool = False, sift_query: bool = False,
                 sift_apply: bool = False, pending_depth: int = 1024, read_latency: int = 1):
        if read_latency not in (1, 2):
            raise ValueError(f"read_latency = {read_latency!r} must be 1 or 2 (register bus clocks)")
        self.read_latency = read_latency
        self.has_choice = bool(choice_query)
        self.has_sift_query = bool(sift_query)
        self.has_sift_apply = bool(sift_apply)
        if self.has_sift_query and not self.has_choice:
            raise ValueError("sift_query needs choice_query (the choice memory port)")
        if self.has_sift_apply and self.has_choice:
            raise ValueError("sift_apply (Bob) does not combine with choice_query / sift_query (Alice)")
        if int(pending_depth) != pending_depth or pending_depth < 1:
            raise ValueError(f"pending_depth = {pending_depth!r} must be an integer >= 1")
        self.pending_depth = int(pending_depth)
        members = {
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "bus": Out(RegisterBusSignature()),
        }
        if self.has_choice:
            members["choice_query"] = Out(stream.Signature(48))
            members["choice_answer"] = In(stream.Signature(ChoiceAnswer))
        if self.has_sift_query or self.has_sift_apply:
            members.update(sift_detected=Out(1), sift_sifted=Out(1), sift_class=Out(3))
        if self.has_sift_query:
            members["sift_lost"] = Out(1)
        if self.has_sift_apply:
            members.update(
                records=In(stream.Signature(64)), record_bits=In(1), records_enable=In(1),
                pending_level=Out(range(self.pending_depth + 1)),
                sift_unanswered=Out(1), sift_unmatched=Out(1),
            )
        members.update(counters_r_en=In(1), counters_r_addr=In(range(len(LINK_COUNTER_NAMES))),
                       counters_r_data=Out(32))
        # A counter counts at most once per frame (a received frame passes FRAME, CHECK and
        # APPLY: >= 3 clocks; a sent one has >= 6 bytes); reads come in bursts of <= 32.
        self.link_counters = LiveCounters(len(LINK_COUNTER_NAMES), 32, min_event_gap=3,
                                          max_read_burst=MAX_READ_COUNT)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        crc_params = crc.catalog.CRC16_IBM_3740(data_width=8)
        m.submodules.rx_crc = rx_crc = crc_params.create()
        m.submodules.tx_crc = tx_crc = crc_params.create()
        # Collisions (hdl/bram.py): the framer takes a read result from `rmem` only clocks
        # after it was written (the port reads every clock, so a colliding word is replaced
        # before it is used); `rxbuf` is written only while no sifting executor holds it.
        m.submodules.rmem = rmem = bram(32, MAX_READ_COUNT)
        rmem_w = rmem.write_port()
        rmem_r = read_port(m, rmem, rmem_w, platform=platform, name="rmem_r")
        m.submodules.rxbuf = rxbuf = bram(8, _RX_BUF_DEPTH)
        rxbuf_w = rxbuf.write_port()
        rxbuf_r = read_port(m, rxbuf, rxbuf_w, platform=platform, name="rxbuf_r")

        sifters = []
        alice = bob = None
        if self.has_sift_query:
            m.submodules.alice_sift = alice = AliceSift()
            sifters.append(alice)
        if self.has_sift_apply:
            m.submodules.bob_sift = bob = BobSift(self.pending_depth)
            sifters.append(bob)
        for x in sifters:
            m.d.comb += [x.rx_data.eq(rxbuf_r.data), rxbuf_r.addr.eq(x.rx_addr)]
            for name in ("sift_detected", "sift_sifted", "sift_class"):
                m.d.comb += getattr(self, name).eq(getattr(x, name))
        if alice is not None:
            m.d.comb += self.sift_lost.eq(alice.sift_lost)
        if bob is not None:
            wiring.connect(m, wiring.flipped(self.records), bob.records)
            m.d.comb += [
                bob.record_bits.eq(self.record_bits),
                bob.records_enable.eq(self.records_enable),
                self.pending_level.eq(bob.pending_level),
                self.sift_unanswered.eq(bob.sift_unanswered),
                self.sift_unmatched.eq(bob.sift_unmatched),
            ]
        rx_lock = Signal()                  # a sifting executor still reads the receive buffer
        hold = Const(0, 1)
        for x in sifters:
            hold = hold | x.rx_hold
        m.d.comb += rx_lock.eq(hold)

        m.submodules.link_counters = counters = self.link_counters
        m.d.comb += [counters.r_en.eq(self.counters_r_en), counters.r_addr.eq(self.counters_r_addr),
                     self.counters_r_data.eq(counters.r_data)]

        def bump(name):
            """Count one event of link counter ``name`` in this clock."""
            return counters.inc[LINK_COUNTER_NAMES.index(name)].eq(1)

        # ------------------------------------------------------------------ receiver
        rx_buf = [Signal(8, name=f"rx_buf{i}") for i in range(_RX_KEEP)]
        rx_len = Signal(range(_RX_LIMIT + 2))           # saturates at _RX_LIMIT + 1 = oversize
        rx_esc = Signal()
        rx_nonempty = Signal()
        rx_pos = Signal(range(SIFT_ENTRY_BYTES))        # (index - 3) mod 7 of the next content byte
        rx_ent = Signal(range(SIFT_MAX_ENTRIES + 2))    # (index - 3) // 7 of the next content byte
        rx_bad_basis = Signal()                         # a byte at position 6 was > 1
        rx_byte = self.rx.payload
        rx_content = Signal(8)
        rx_take = Signal()                              # a content byte this cycle
        verdict = Signal(range(12))
        gap = Signal()
        have_prev = Signal()
        prev_seq = Signal(8)
        ex_idle = Signal()
        ex_start = Signal()

        m.d.comb += [
            rx_content.eq(rx_byte ^ Mux(rx_esc, ESC_XOR, 0)),
            rx_crc.data.eq(rx_content),
            rx_crc.valid.eq(rx_take),
            rx_crc.start.eq(rx_len == 0),
            rxbuf_w.addr.eq(rx_len),
            rxbuf_w.data.eq(rx_content),
            rxbuf_w.en.eq(rx_take & (rx_len != _RX_LIMIT + 1)),
        ]

        with m.FSM(name="rx_fsm") as rx_fsm:
            with m.State("HUNT"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(self.rx.valid & (rx_byte == FLAG)):
                    m.next = "FRAME"
            with m.State("FRAME"):
                m.d.comb += self.rx.ready.eq(~rx_lock)
                with m.If(self.rx.valid & ~rx_lock):
                    with m.If(rx_byte == FLAG):
                        with m.If(rx_nonempty):
                            m.next = "CHECK"
                    with m.Else():
                        m.d.sync += rx_nonempty.eq(1)
                        with m.If(~rx_esc & (rx_byte == ESC)):
                            m.d.sync += rx_esc.eq(1)
                        with m.Else():
                            m.d.sync += rx_esc.eq(0)
                            m.d.comb += rx_take.eq(1)
                            with m.If(rx_len != _RX_LIMIT + 1):
                                m.d.sync += rx_len.eq(rx_len + 1)
                                with m.If(rx_len >= ENTRIES_OFFSET):
                                    m.d.sync += rx_pos.eq(rx_pos + 1)
                                    with m.If(rx_pos == SIFT_ENTRY_BYTES - 1):
                                        m.d.sync += [rx_pos.eq(0), rx_ent.eq(rx_ent + 1)]
                                        with m.If(rx_content > 1):
                                            m.d.sync += rx_bad_basis.eq(1)
                            for i, b in enumerate(rx_buf):
                                with m.If(rx_len == i):
                                    m.d.sync += b.eq(rx_content)
            with m.State("CHECK"):
                rtype = rx_buf[0]
                plen = lambda t: 4 + REQUEST_PAYLOAD_LENGTH[t]
                # SIFT length rule: content = 3 + 7k + 2 (CRC) bytes, k = 1..32
                sift_len_ok = (rx_pos == 2) & (rx_ent != 0) & (rx_ent <= SIFT_MAX_ENTRIES)
                sift_count_ok = rx_buf[2] == rx_ent
                m.d.sync += gap.eq(have_prev & (rx_buf[1] != (prev_seq + 1)[:8]))
                with m.If(rx_len == _RX_LIMIT + 1):
                    m.d.sync += verdict.eq(_V_OVERSIZE)
                with m.Elif(rx_esc):
                    m.d.sync += verdict.eq(_V_FRAMING)
                with m.Elif(rx_len < 4):
                    m.d.sync += verdict.eq(_V_TRUNCATED)
                with m.Elif(~rx_crc.match_detected):
                    m.d.sync += verdict.eq(_V_CRC)
                with m.Elif(rtype == MsgType.REG_WRITE):
                    m.d.sync += verdict.eq(_V_WRITE)
                    with m.If(rx_len != plen(MsgType.REG_WRITE)):
                        m.d.sync += verdict.eq(_V_BAD_LENGTH)
                with m.Elif(rtype == MsgType.REG_READ):
                    m.d.sync += verdict.eq(_V_READ)
                    with m.If(rx_len != plen(MsgType.REG_READ)):
                        m.d.sync += verdict.eq(_V_BAD_LENGTH)
                if self.has_choice:
                    with m.Elif(rtype == MsgType.CHOICE_QUERY):
                        m.d.sync += verdict.eq(_V_CHOICE)
                        with m.If(rx_len != plen(MsgType.CHOICE_QUERY)):
                            m.d.sync += verdict.eq(_V_BAD_LENGTH)
                if self.has_sift_query:
                    with m.Elif(rtype == MsgType.SIFT_QUERY):
                        with m.If(~sift_len_ok):
                            m.d.sync += verdict.eq(_V_BAD_LENGTH)
                        with m.Elif(~sift_count_ok | rx_bad_basis):
                            m.d.sync += verdict.eq(_V_SIFT_NAK)
                        with m.Else():
                            m.d.sync += verdict.eq(_V_SIFT_QUERY)
                if self.has_sift_apply:
                    with m.Elif(rtype == MsgType.SIFT_APPLY):
                        with m.If(~sift_len_ok):
                            m.d.sync += verdict.eq(_V_BAD_LENGTH)
                        with m.Elif(~sift_count_ok):
                            m.d.sync += verdict.eq(_V_SIFT_NAK)
                        with m.Else():
                            m.d.sync += verdict.eq(_V_SIFT_APPLY)
                with m.Else():
                    m.d.sync += verdict.eq(_V_UNKNOWN)
                m.next = "APPLY"
            with m.State("APPLY"):
                with m.If(ex_idle):
                    m.d.sync += [rx_len.eq(0), rx_esc.eq(0), rx_nonempty.eq(0),
                                 rx_pos.eq(0), rx_ent.eq(0), rx_bad_basis.eq(0)]
                    m.next = "FRAME"
                    with m.Switch(verdict):
                        with m.Case(_V_OVERSIZE):
                            m.d.comb += bump("rx_oversize")
                        with m.Case(_V_FRAMING):
                            m.d.comb += bump("rx_framing_errors")
                        with m.Case(_V_TRUNCATED):
                            m.d.comb += bump("rx_truncated")
                        with m.Case(_V_CRC):
                            m.d.comb += bump("rx_crc_errors")
                        with m.Case(_V_UNKNOWN):
                            m.d.comb += bump("rx_unknown_type")
                        with m.Case(_V_BAD_LENGTH):
                            m.d.comb += bump("rx_bad_length")
                        with m.Default():
                            m.d.comb += bump("rx_frames")
                    with m.If(verdict >= _V_UNKNOWN):       # passed the CRC: answered
                        m.d.comb += ex_start.eq(1)
                        m.d.sync += [prev_seq.eq(rx_buf[1]), have_prev.eq(1)]
                        with m.If(gap):
                            m.d.comb += bump("rx_seq_gaps")

        rx_req_pending = Signal()
        m.d.comb += rx_req_pending.eq(rx_fsm.ongoing("CHECK") | rx_fsm.ongoing("APPLY"))

        # content byte sources -> pipeline register c_* -> framer
        s_valid = Signal()
        s_data = Signal(8)
        s_last = Signal()
        s_ready = Signal()
        c_valid = Signal()
        c_data = Signal(8)
        c_last = Signal()
        c_take = Signal()
        tx_idle = Signal()
        core_start = Signal()
        core_busy = Signal()
        core_valid = Signal()
        core_data = Signal(8)
        core_last = Signal()

        # ------------------------------------------------------------------ dispatcher
        with m.FSM(name="dispatch"):
            with m.State("IDLE"):
                m.d.comb += ex_idle.eq(1)
                with m.If(ex_start):
                    m.next = "BUSY"
                    with m.Switch(verdict):
                        if alice is not None:
                            with m.Case(_V_SIFT_QUERY):
                                m.d.comb += alice.start.eq(1)
                        if bob is not None:
                            with m.Case(_V_SIFT_APPLY):
                                m.d.comb += bob.start.eq(1)
                        with m.Default():
                            m.d.comb += core_start.eq(1)
                if bob is not None:
                    with m.Elif(bob.can_detect & ~rx_req_pending):
                        m.d.comb += bob.start_det.eq(1)
                        m.next = "BUSY"
            with m.State("BUSY"):
                busy = core_busy
                for x in sifters:
                    busy = busy | x.busy
                with m.If(~busy & tx_idle):
                    m.next = "IDLE"
        for x in sifters:
            m.d.comb += [x.count.eq(rx_buf[2]), x.req_seq.eq(rx_buf[1])]

        # ------------------------------------------------------------------ core executor
        req_type = Signal(8)
        req_seq = Signal(8)
        p = [Signal(8, name=f"req_p{i}") for i in range(_RX_KEEP - 2)]
        raddr = Signal(17)               # bus address; bit 16 = past the end of the address space
        rleft = Signal(range(MAX_READ_COUNT + 1))
        widx = Signal(range(MAX_READ_COUNT))
        pend = Signal()                 # a read's data and err are on the bus this clock
        pend_idx = Signal(range(MAX_READ_COUNT))
        pend_oob = Signal()
        issued = Signal()               # read_latency 2: a read issued last clock
        issued_idx = Signal(range(MAX_READ_COUNT))
        issued_oob = Signal()
        err_acc = Signal()
        resp_kind = Signal(2)
        status = Signal(2)
        nak_code = Signal(2)
        body = Signal(2)
        hdr = Signal(72 if self.has_choice else 48)     # CHOICE_DATA has the longest header
        hdr_left = Signal(range(10))
        body_left = Signal(8)
        word = Signal(32)
        byte_idx = Signal(2)
        rd_idx = Signal(range(MAX_READ_COUNT + 1))

        m.d.comb += [
            self.bus.addr.eq(raddr[:16]),
            self.bus.w_data.eq(Cat(p[2], p[3], p[4], p[5])),
            rmem_w.addr.eq(pend_idx),
            rmem_w.data.eq(self.bus.r_data),
            rmem_w.en.eq(pend),
            rmem_r.addr.eq(rd_idx),
        ]
        with m.If(pend):
            m.d.sync += err_acc.eq(err_acc | self.bus.err | pend_oob)

        if self.has_choice:
            q_slot = Signal(48)
            q_left = Signal(8)
            core_ans_ready = Signal()
            core_q_valid = Signal()
            m.d.comb += core_q_valid.eq(q_left != 0)
            if alice is not None:
                aq = alice.choice_query
                # The running request is a SIFT_QUERY: the query source is chosen by a register
                # (not by the sift reader's `valid`, which made the UP5K's critical path run on
                # through the choice memory's 48-bit window compares).
                q_from_sift = Signal()
                with m.If(ex_start):
                    m.d.sync += q_from_sift.eq(verdict == _V_SIFT_QUERY)
                m.d.comb += [
                    self.choice_query.valid.eq(core_q_valid | aq.valid),
                    self.choice_query.payload.eq(Mux(q_from_sift, aq.payload, q_slot)),
                    aq.ready.eq(self.choice_query.ready),
                    alice.choice_answer.valid.eq(self.choice_answer.valid),
                    alice.choice_answer.payload.eq(self.choice_answer.payload),
                    self.choice_answer.ready.eq(core_ans_ready | alice.choice_answer.ready),
                ]
            else:
                m.d.comb += [
                    self.choice_query.valid.eq(core_q_valid),
                    self.choice_query.payload.eq(q_slot),
                    self.choice_answer.ready.eq(core_ans_ready),
                ]
            with m.If(core_q_valid & self.choice_query.ready):
                m.d.sync += [q_slot.eq(q_slot + 1), q_left.eq(q_left - 1)]

        with m.FSM(name="ex_fsm") as ex_fsm:
            with m.State("IDLE"):
                with m.If(core_start):
                    m.d.sync += [
                        req_type.eq(rx_buf[0]), req_seq.eq(rx_buf[1]),
                        [pi.eq(rx_buf[2 + i]) for i, pi in enumerate(p)],
                        raddr.eq(Cat(rx_buf[2], rx_buf[3], Const(0, 1))),
                    ]
                    with m.Switch(verdict):
                        with m.Case(_V_UNKNOWN):
                            m.d.sync += [resp_kind.eq(_R_NAK), nak_code.eq(NakCode.UNKNOWN_TYPE), body.eq(_B_NONE)]
                            m.next = "LOAD"
                        with m.Case(_V_BAD_LENGTH, _V_SIFT_NAK):
                            m.d.sync += [resp_kind.eq(_R_NAK), nak_code.eq(NakCode.BAD_LENGTH), body.eq(_B_NONE)]
                            m.next = "LOAD"
                        with m.Case(_V_WRITE):
                            m.next = "WRITE"
                        with m.Case(_V_READ):
                            m.next = "READ_START"
                        if self.has_choice:
                            with m.Case(_V_CHOICE):
                                m.next = "CHOICE_START"

            with m.State("WRITE"):
                with m.If(~self.bus.busy):      # never write while a command is carried out
                    m.d.comb += self.bus.w_en.eq(1)
                    m.next = "WRITE_RESP"
            with m.State("WRITE_RESP"):
                m.d.sync += [resp_kind.eq(_R_ACK), body.eq(_B_NONE),
                             status.eq(Status.OK)]
                with m.If(self.bus.err):
                    m.d.sync += status.eq(Status.BAD_ADDRESS)
                with m.If(self.bus.busy):
                    m.next = "WRITE_WAIT"
                with m.Else():
                    m.next = "LOAD"
            with m.State("WRITE_WAIT"):
                # The slave still carries out the write (a counter snapshot or clear sweep):
                # the acknowledgement leaves after it, so a later read sees the result.
                with m.If(~self.bus.busy):
                    m.next = "LOAD"

            with m.State("READ_START"):
                m.d.sync += [resp_kind.eq(_R_READ), rleft.eq(p[2]), widx.eq(0), err_acc.eq(0)]
                with m.If((p[2] == 0) | (p[2] > MAX_READ_COUNT)):
                    m.d.sync += [status.eq(Status.BAD_VALUE), body.eq(_B_NONE)]
                    m.next = "LOAD"
                with m.Else():
                    m.next = "READ"
            with m.State("READ"):
                issue = Signal()
                m.d.comb += [issue.eq(rleft != 0), self.bus.r_en.eq(issue)]
                if self.read_latency == 1:
                    m.d.sync += [pend.eq(issue), pend_idx.eq(widx), pend_oob.eq(raddr[16])]
                else:
                    m.d.sync += [issued.eq(issue), issued_idx.eq(widx), issued_oob.eq(raddr[16]),
                                 pend.eq(issued), pend_idx.eq(issued_idx), pend_oob.eq(issued_oob)]
                with m.If(issue):
                    m.d.sync += [raddr.eq(raddr + 1), rleft.eq(rleft - 1), widx.eq(widx + 1)]
                with m.Elif(~pend & ~issued):
                    m.d.sync += [status.eq(Status.OK), body.eq(_B_WORDS)]
                    with m.If(err_acc):
                        m.d.sync += [status.eq(Status.BAD_ADDRESS), body.eq(_B_NONE)]
                    m.next = "LOAD"

            if self.has_choice:
                with m.State("CHOICE_START"):
                    with m.If((p[6] == 0) | (p[6] > MAX_CHOICE_COUNT)):
                        m.d.sync += [resp_kind.eq(_R_NAK), nak_code.eq(NakCode.BAD_LENGTH), body.eq(_B_NONE)]
                    with m.Else():
                        m.d.sync += [resp_kind.eq(_R_CHOICE), body.eq(_B_ENTRIES),
                                     q_slot.eq(Cat(*p[0:6])), q_left.eq(p[6])]
                    m.next = "LOAD"

            with m.State("LOAD"):
                st8 = Cat(status, Const(0, 6))
                code8 = Cat(nak_code, Const(0, 6))
                with m.Switch(resp_kind):
                    with m.Case(_R_NAK):
                        m.d.sync += [hdr.eq(Cat(Const(MsgType.NAK, 8), req_seq, code8, req_type)),
                                     hdr_left.eq(4)]
                    with m.Case(_R_ACK):
                        m.d.sync += [hdr.eq(Cat(Const(MsgType.WRITE_ACK, 8), req_seq, p[0], p[1], st8)),
                                     hdr_left.eq(5)]
                    with m.Case(_R_READ):
                        m.d.sync += [hdr.eq(Cat(Const(MsgType.READ_DATA, 8), req_seq, p[0], p[1], p[2], st8)),
                                     hdr_left.eq(6)]
                    if self.has_choice:
                        with m.Case(_R_CHOICE):
                            m.d.sync += [hdr.eq(Cat(Const(MsgType.CHOICE_DATA, 8), req_seq, *p)),
                                         hdr_left.eq(9)]
                m.d.sync += [body_left.eq(p[6]), rd_idx.eq(0)]
                with m.If(resp_kind == _R_READ):
                    m.d.sync += body_left.eq(p[2])
                m.next = "HDR"

            with m.State("HDR"):
                m.d.comb += [core_valid.eq(1), core_data.eq(hdr[:8]),
                             core_last.eq((hdr_left == 1) & (body == _B_NONE))]
                with m.If(s_ready):
                    m.d.sync += [hdr.eq(hdr >> 8), hdr_left.eq(hdr_left - 1)]
                    with m.If(hdr_left == 1):
                        with m.Switch(body):
                            with m.Case(_B_NONE):
                                m.next = "IDLE"
                            with m.Case(_B_WORDS):
                                # rd_idx has been 0 since LOAD: rmem_r.data = word 0
                                m.d.sync += [word.eq(rmem_r.data), rd_idx.eq(1), byte_idx.eq(0)]
                                m.next = "WORDS"
                            if self.has_choice:
                                with m.Case(_B_ENTRIES):
                                    m.next = "ENTRIES"

            with m.State("WORDS"):
                m.d.comb += [core_valid.eq(1), core_data.eq(word[:8]),
                             core_last.eq((byte_idx == 3) & (body_left == 1))]
                with m.If(s_ready):
                    m.d.sync += [word.eq(word >> 8), byte_idx.eq(byte_idx + 1)]
                    with m.If(byte_idx == 3):
                        # rd_idx changed >= 4 cycles ago: rmem_r.data = word rd_idx
                        m.d.sync += [word.eq(rmem_r.data), rd_idx.eq(rd_idx + 1),
                                     body_left.eq(body_left - 1)]
                        with m.If(body_left == 1):
                            m.next = "IDLE"

            if self.has_choice:
                with m.State("ENTRIES"):
                    ans = self.choice_answer.payload
                    m.d.comb += [core_valid.eq(self.choice_answer.valid),
                                 core_data.eq(Cat(ans.symbol, ans.status, Const(0, 2))),
                                 core_last.eq(body_left == 1),
                                 core_ans_ready.eq(s_ready)]
                    with m.If(self.choice_answer.valid & s_ready):
                        m.d.sync += body_left.eq(body_left - 1)
                        with m.If(body_left == 1):
                            m.next = "IDLE"
        m.d.comb += core_busy.eq(~ex_fsm.ongoing("IDLE"))

        # content mux (one source active at a time; idle sources hold valid low)
        valid_any = core_valid
        data_any = Mux(core_valid, core_data, 0)
        last_any = core_valid & core_last
        for x in sifters:
            cv = x.content.valid
            valid_any = valid_any | cv
            data_any = data_any | Mux(cv, x.content.payload.data, 0)
            last_any = last_any | (cv & x.content.payload.last)
            m.d.comb += x.content.ready.eq(s_ready)
        m.d.comb += [s_valid.eq(valid_any), s_data.eq(data_any), s_last.eq(last_any)]

        # Skid buffer between the content sources and the framer: ``s_ready`` is a register
        # (the skid slot is free), so the framer's back-pressure (from the UART's transmit
        # FIFO) does not run combinationally into the sources and on into the choice memory.
        k_valid = Signal()
        k_data = Signal(8)
        k_last = Signal()
        m.d.comb += s_ready.eq(~k_valid)
        with m.If(~c_valid | c_take):
            with m.If(k_valid):
                m.d.sync += [c_valid.eq(1), c_data.eq(k_data), c_last.eq(k_last), k_valid.eq(0)]
            with m.Elif(s_valid):
                m.d.sync += [c_valid.eq(1), c_data.eq(s_data), c_last.eq(s_last)]
            with m.Else():
                m.d.sync += c_valid.eq(0)
        with m.Elif(s_valid & s_ready):
            m.d.sync += [k_valid.eq(1), k_data.eq(s_data), k_last.eq(s_last)]

        # ------------------------------------------------------------------ framer
        dev_seq = Signal(8)
        frame_done = Signal()
        advance = Signal()
        esc_byte = Signal(8)
        esc_ret = Signal(3)                 # where ESC returns to
        seq_last = Signal()                 # the TYPE byte was the frame's last content byte
        _RET_SEQ, _RET_DATA, _RET_CRC_HI, _RET_CRC_LO, _RET_CLOSE = range(5)
        m.d.comb += advance.eq(~self.tx.valid | self.tx.ready)

        def emit(byte):
            return [self.tx.valid.eq(1), self.tx.payload.eq(byte)]

        def emit_stuffed(byte, ret, next_state):
            with m.If(_special(byte)):
                m.d.sync += emit(ESC)
                m.d.sync += [esc_byte.eq(byte ^ ESC_XOR), esc_ret.eq(ret)]
                m.next = "ESC"
            with m.Else():
                m.d.sync += emit(byte)
                m.next = next_state

        with m.FSM(name="tx_fsm") as tx_fsm:
            with m.State("IDLE"):
                m.d.comb += tx_crc.start.eq(1)
                with m.If(advance):
                    m.d.sync += self.tx.valid.eq(0)
                    with m.If(c_valid):
                        m.d.sync += emit(FLAG)
                        m.next = "TYPE"
            with m.State("TYPE"):
                with m.If(advance):
                    m.d.sync += self.tx.valid.eq(0)
                    with m.If(c_valid):
                        m.d.comb += [c_take.eq(1), tx_crc.valid.eq(1), tx_crc.data.eq(c_data)]
                        m.d.sync += seq_last.eq(c_last)
                        emit_stuffed(c_data, _RET_SEQ, "SEQ")
            with m.State("SEQ"):
                with m.If(advance):
                    m.d.comb += [tx_crc.valid.eq(1), tx_crc.data.eq(dev_seq)]
                    with m.If(seq_last):
                        emit_stuffed(dev_seq, _RET_CRC_HI, "CRC_HI")
                    with m.Else():
                        emit_stuffed(dev_seq, _RET_DATA, "DATA")
            with m.State("DATA"):
                with m.If(advance):
                    m.d.sync += self.tx.valid.eq(0)
                    with m.If(c_valid):
                        m.d.comb += [c_take.eq(1), tx_crc.valid.eq(1), tx_crc.data.eq(c_data)]
                        with m.If(c_last):
                            emit_stuffed(c_data, _RET_CRC_HI, "CRC_HI")
                        with m.Else():
                            emit_stuffed(c_data, _RET_DATA, "DATA")
            with m.State("ESC"):
                with m.If(advance):
                    m.d.sync += emit(esc_byte)
                    with m.Switch(esc_ret):
                        with m.Case(_RET_SEQ):
                            m.next = "SEQ"
                        with m.Case(_RET_DATA):
                            m.next = "DATA"
                        with m.Case(_RET_CRC_HI):
                            m.next = "CRC_HI"
                        with m.Case(_RET_CRC_LO):
                            m.next = "CRC_LO"
                        with m.Case(_RET_CLOSE):
                            m.next = "CLOSE"
            with m.State("CRC_HI"):
                with m.If(advance):
                    emit_stuffed(tx_crc.crc[8:16], _RET_CRC_LO, "CRC_LO")
            with m.State("CRC_LO"):
                with m.If(advance):
                    emit_stuffed(tx_crc.crc[0:8], _RET_CLOSE, "CLOSE")
            with m.State("CLOSE"):
                with m.If(advance):
                    m.d.sync += emit(FLAG)
                    m.d.comb += frame_done.eq(1)
                    m.next = "IDLE"
        m.d.comb += tx_idle.eq(tx_fsm.ongoing("IDLE") & ~c_valid)

        with m.If(frame_done):
            m.d.comb += bump("tx_frames")
            m.d.sync += dev_seq.eq(dev_seq + 1)

        return m
