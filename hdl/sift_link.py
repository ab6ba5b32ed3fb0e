"""Sifting executors of the host link: Alice's SIFT_QUERY, Bob's SIFT_APPLY and DETECTIONS.

See ``docs/hostlink.md`` ("Sifting and detection messages"); the reference is
:func:`qkdlink.gateware.protocol.alice_sift_model` / :func:`~qkdlink.gateware.protocol.bob_apply_model`
inside :class:`~qkdlink.gateware.protocol.DeviceModel`. These blocks are instantiated by
:class:`qkdlink.hdl.hostlink.HostLink`, which owns the receiver, the receive buffer (a 256 x 8
block RAM holding the frame content at its content index: entry ``i`` of a SIFT request is at
bytes ``3 + 7 i .. 9 + 7 i``), the dispatcher and the framer.

Common interface (HostLink side):

* ``start`` (one cycle) with ``count`` (1..32, checked by the receiver) and ``req_seq``;
* ``rx_addr`` / ``rx_data``: a synchronous read port of the receive buffer (data = content
  byte at the address of the previous cycle); ``rx_hold`` is high while the block still needs
  the buffer (the receiver takes no byte meanwhile);
* ``content``: the unstuffed frame content without the SEQ byte (TYPE, PAYLOAD; the framer
  inserts the device SEQ), ``last`` on the final byte of each frame; ``busy`` until the last
  content byte has been handed over.

Every output is a register or a short function of registers; ``content.ready`` only gates
the shift registers' pops and refills. Block RAM outputs (receive buffer, pending queue) are
registered before any logic, so the blocks run at the Alice/Bob clock (156.25 MHz, ECP5
speed grade 8).

Latency (1 byte per clock, no back-pressure): Alice's SIFT_ANSWER opening flag goes out 5
clocks after a SIFT_QUERY's closing flag, its entries at the rate the choice memory answers;
the receive buffer is read at 7 clocks per entry (226 clocks for 32 entries). Bob's merge is
paced by the same reader (7 clocks per answer) plus 3 clocks per dropped (unanswered)
detection; SIFTED_KEY starts when the merge is done (about 235 clocks after the closing
flag of a 32-entry SIFT_APPLY). A DETECTIONS frame starts about 4 clocks after its last record is
taken (one record per clock, up to 30).
"""
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from qkdlink.gateware.protocol import (
    CHOICE_OK, INTENSITY_BLANK, MAX_DETECTION_RECORDS, RECORD_BIT_BIT, SIFT_ENTRY_BYTES,
    SIFT_MAX_ENTRIES, SLOT_BITS, MsgType,
)
from qkdlink.hdl.bram import bram, read_port
from qkdlink.hdl.choice_memory import ChoiceAnswer

__all__ = ["Content", "ContentSignature", "EntrySerializer", "AliceSift", "BobSift", "ENTRIES_OFFSET"]

Content = data.StructLayout({"data": 8, "last": 1})
ContentSignature = stream.Signature(Content)

ENTRIES_OFFSET = 3          # content index of entry 0 (TYPE, SEQ, count before it)
_N = range(SIFT_MAX_ENTRIES + 1)


class EntrySerializer(wiring.Component):
    """One frame's content: ``hdr_len`` (2 or 3) header bytes from ``hdr`` (LSB first), then
    ``n`` entries of 7 (``eb8`` = 0) or 8 bytes read from a 32 x 64 memory (entry ``i`` at
    word ``i``, LSB first) through a synchronous read port (``mem_addr`` / ``mem_data``).

    ``start`` loads the job (``hdr``, ``hdr_len``, ``n``, ``eb8`` are sampled then; the memory
    must not be written from then on); ``busy`` until the last byte is taken. The first entry
    word is read while the header goes out (hence ``hdr_len >= 2``), every next word while the
    previous entry goes out. The memories behind it are small (LUT RAM, asynchronous read
    behind the synchronous port), so ``mem_data`` feeds the shift register directly.
    """

    def __init__(self):
        super().__init__({
            "start": In(1),
            "hdr": In(24),
            "hdr_len": In(2),
            "n": In(range(SIFT_MAX_ENTRIES + 1)),
            "eb8": In(1),
            "mem_addr": Out(5),
            "mem_data": In(64),
            "content": Out(ContentSignature),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        sh = Signal(64)
        left = Signal(4)                     # bytes left in sh
        ent = Signal(range(SIFT_MAX_ENTRIES + 1))   # entries still to load
        idx = Signal(5)
        eb8 = Signal()
        c = self.content
        m.d.comb += [
            self.mem_addr.eq(idx),
            self.busy.eq(left != 0),
            c.valid.eq(left != 0),
            c.payload.data.eq(sh[:8]),
            c.payload.last.eq((left == 1) & (ent == 0)),
        ]
        with m.If(self.start):
            m.d.sync += [sh.eq(self.hdr), left.eq(self.hdr_len), ent.eq(self.n), idx.eq(0),
                         eb8.eq(self.eb8)]
        with m.Elif(c.valid & c.ready):
            m.d.sync += [sh.eq(sh >> 8), left.eq(left - 1)]
            with m.If((left == 1) & (ent != 0)):
                m.d.sync += [sh.eq(self.mem_data), left.eq(Mux(eb8, 8, 7)),
                             ent.eq(ent - 1), idx.eq(idx + 1)]
        return m


class _EntryReader:
    """Reads the ``count`` 7-byte entries of a SIFT request from the receive buffer into
    ``(slot, byte)`` handed over through a one-entry register (``out_valid``, cleared by the
    consumer). Used inside an ``elaborate``.

    One read per clock from a registered address; the block RAM's output is registered
    (``in_byte``) before any logic, so a byte arrives 2 clocks after its read. The last byte of
    an entry is read only while ``out_valid`` is low: it arrives to an empty handover register
    (only that byte can fill it), so arrivals never stall. ``rx_hold`` (= still reading) drops
    after the last read.
    """

    def __init__(self, m, owner):
        E = SIFT_ENTRY_BYTES
        self.active = Signal(name="rd_active")            # issuing reads
        self.addr = Signal(8, name="rd_addr")
        self.i_byte = Signal(range(E), name="rd_i_byte")
        self.i_ent = Signal(_N, name="rd_i_ent")
        self.count = Signal(_N, name="rd_count")
        self.v1 = Signal(name="rd_v1")                    # a byte on the block RAM output
        self.b1 = Signal(range(E), name="rd_b1")
        self.v2 = Signal(name="rd_v2")                    # a byte in in_byte
        self.b2 = Signal(range(E), name="rd_b2")
        self.in_byte = Signal(8, name="rd_in_byte")
        self.asm = Signal(SLOT_BITS, name="rd_asm")
        self.ent = Signal(_N, name="rd_ent")              # entries handed over
        self.out_valid = Signal(name="rd_out_valid")
        self.out_slot = Signal(SLOT_BITS, name="rd_out_slot")
        self.out_byte = Signal(8, name="rd_out_byte")
        self.handover = Signal(name="rd_handover")        # comb: an entry is handed over now
        o = owner
        issue = Signal(name="rd_issue")
        m.d.comb += [
            issue.eq(self.active & ((self.i_byte != E - 1) | ~self.out_valid)),
            o.rx_addr.eq(self.addr),
            o.rx_hold.eq(self.active),
            self.handover.eq(self.v2 & (self.b2 == E - 1)),
        ]
        m.d.sync += [self.v1.eq(issue), self.b1.eq(self.i_byte), self.v2.eq(self.v1),
                     self.b2.eq(self.b1), self.in_byte.eq(o.rx_data)]
        with m.If(issue):
            m.d.sync += [self.addr.eq(self.addr + 1), self.i_byte.eq(self.i_byte + 1)]
            with m.If(self.i_byte == E - 1):
                m.d.sync += [self.i_byte.eq(0), self.i_ent.eq(self.i_ent + 1)]
                with m.If(self.i_ent + 1 == self.count):
                    m.d.sync += self.active.eq(0)
        with m.If(self.v2):
            with m.If(self.b2 == E - 1):
                m.d.sync += [self.ent.eq(self.ent + 1), self.out_valid.eq(1),
                             self.out_slot.eq(self.asm), self.out_byte.eq(self.in_byte)]
            with m.Else():
                m.d.sync += self.asm.eq(Cat(self.asm[8:], self.in_byte))

    def start(self, m, count):
        m.d.sync += [self.active.eq(1), self.addr.eq(ENTRIES_OFFSET), self.i_byte.eq(0),
                     self.i_ent.eq(0), self.count.eq(count), self.ent.eq(0), self.out_valid.eq(0)]


def _common_ports():
    return {
        "start": In(1),
        "count": In(range(SIFT_MAX_ENTRIES + 1)),
        "req_seq": In(8),
        "rx_addr": Out(8),
        "rx_data": In(8),
        "rx_hold": Out(1),
        "content": Out(ContentSignature),
        "busy": Out(1),
        "sift_detected": Out(1),
        "sift_sifted": Out(1),
        "sift_class": Out(3),
    }


class AliceSift(wiring.Component):
    """SIFT_QUERY executor (Alice): SIFT_ANSWER streamed as the choice memory answers, then
    SIFTED_KEY from a 32-entry key buffer.

    The entry reader assembles each ``(slot, basis)`` from the receive buffer (7 clocks per
    entry, 2 clocks latency), issues the slot on ``choice_query`` and keeps the basis bit.
    The answer side takes each choice answer into an answer register; one clock later it
    decides keep, writes a kept ``(slot, symbol)`` into the key buffer (32 x 56 LUT RAM) and
    pulses the counter outputs (registered, one clock per entry): ``sift_detected`` (OK, not
    blank), ``sift_sifted`` (kept), ``sift_class`` = ``2 * intensity + basis`` (Alice's) for
    those two, ``sift_lost`` (status LOST or FUTURE); the entry then moves into a 7-byte shift
    register (slot, answer byte) as the previous one drains.
    """

    def __init__(self):
        super().__init__({
            **_common_ports(),
            "choice_query": Out(stream.Signature(SLOT_BITS)),
            "choice_answer": In(stream.Signature(ChoiceAnswer)),
            "sift_lost": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.ser = ser = EntrySerializer()
        # Collisions (hdl/bram.py): the serializer reads the key buffer only while SEND, when
        # nothing writes it, and its idle reads are refreshed every clock.
        m.submodules.kmem = kmem = bram(SLOT_BITS + 8, SIFT_MAX_ENTRIES)
        kw = kmem.write_port()
        kr = read_port(m, kmem, kw, platform=platform, name="kr")
        m.d.comb += [kr.addr.eq(ser.mem_addr), ser.mem_data.eq(kr.data)]

        rd = _EntryReader(m, self)
        bb = Signal(SIFT_MAX_ENTRIES)           # queried basis of entry i
        q = self.choice_query
        m.d.comb += [q.valid.eq(rd.out_valid), q.payload.eq(rd.out_slot)]
        with m.If(q.valid & q.ready):
            m.d.sync += rd.out_valid.eq(0)
        with m.If(rd.handover):
            m.d.sync += bb.bit_select(rd.ent[:5], 1).eq(rd.in_byte[0])

        ow = Signal(SLOT_BITS + 8)               # answer-side shift register
        ocnt = Signal(range(SIFT_ENTRY_BYTES + 1))
        a_idx = Signal(_N)                      # answers taken from the choice memory
        o_idx = Signal(_N)                      # answers loaded into ow
        kcnt = Signal(_N)                       # entries kept
        count = Signal(_N)
        req_seq = Signal(8)

        # Answer register: decouples the decision from the choice memory's (block RAM) output.
        r_valid = Signal()
        r_slot = Signal(SLOT_BITS)
        r_symbol = Signal(4)
        r_status = Signal(2)
        r_basis = Signal()                      # the queried basis of this entry
        r_new = Signal()                        # first clock of r_valid: decide, count, store key
        ans = self.choice_answer.payload
        a_fire = Signal()
        m.d.comb += a_fire.eq(self.choice_answer.valid & self.choice_answer.ready)
        m.d.sync += r_new.eq(a_fire)
        with m.If(a_fire):
            # bb[a_idx] was written when entry a_idx was read, >= 2 clocks before its answer
            m.d.sync += [r_valid.eq(1), r_slot.eq(ans.slot), r_symbol.eq(ans.symbol),
                         r_status.eq(ans.status), r_basis.eq(bb.bit_select(a_idx[:5], 1)),
                         a_idx.eq(a_idx + 1)]

        ok = Signal()
        inten = Signal(2)
        detected = Signal()
        keep = Signal()
        load = Signal()                         # r -> ow this clock
        m.d.comb += [
            ok.eq(r_status == CHOICE_OK),
            inten.eq(Mux(ok, r_symbol[2:4], 0)),
            detected.eq(ok & (inten != INTENSITY_BLANK)),
            keep.eq(detected & (r_symbol[1] == r_basis)),
            kw.addr.eq(kcnt[:5]),
            kw.data.eq(Cat(r_slot, r_symbol)),
            kw.en.eq(r_new & keep),
        ]
        m.d.sync += [self.sift_detected.eq(0), self.sift_sifted.eq(0), self.sift_lost.eq(0)]
        with m.If(r_new):
            m.d.sync += [
                kcnt.eq(kcnt + keep),
                self.sift_detected.eq(detected),
                self.sift_sifted.eq(keep),
                self.sift_lost.eq(~ok),
                self.sift_class.eq(Cat(r_symbol[1], inten)),
            ]
        with m.If(load):
            m.d.sync += [
                r_valid.eq(0),
                ow.eq(Cat(r_slot, keep, inten, r_status, Const(0, 3))),
                ocnt.eq(SIFT_ENTRY_BYTES),
                o_idx.eq(o_idx + 1),
            ]

        c = self.content
        with m.FSM(name="alice_sift"):
            with m.State("IDLE"):
                with m.If(self.start):
                    rd.start(m, self.count)
                    m.d.sync += [count.eq(self.count), req_seq.eq(self.req_seq), a_idx.eq(0), o_idx.eq(0),
                                 kcnt.eq(0), r_valid.eq(0),
                                 ow.eq(Cat(Const(MsgType.SIFT_ANSWER, 8), self.req_seq, self.count)),
                                 ocnt.eq(3)]
                    m.next = "ANSWER"
            with m.State("ANSWER"):
                m.d.comb += [
                    self.busy.eq(1),
                    c.valid.eq(ocnt != 0),
                    c.payload.data.eq(ow[:8]),
                    c.payload.last.eq((ocnt == 1) & (o_idx == count)),
                    self.choice_answer.ready.eq(~r_valid & (a_idx != count)),
                    load.eq(r_valid & ((ocnt == 0) | ((ocnt == 1) & c.ready))),
                ]
                with m.If(c.valid & c.ready):
                    with m.If(~load):
                        m.d.sync += [ow.eq(ow >> 8), ocnt.eq(ocnt - 1)]
                    with m.If(c.payload.last):
                        m.d.comb += ser.start.eq(1)
                        m.next = "KEY"
            with m.State("KEY"):
                m.d.comb += [self.busy.eq(1), c.valid.eq(ser.content.valid),
                             c.payload.eq(ser.content.payload), ser.content.ready.eq(c.ready)]
                with m.If(~ser.busy):
                    m.next = "IDLE"
        m.d.comb += [
            ser.hdr.eq(Cat(Const(MsgType.SIFTED_KEY, 8), req_seq, kcnt)),
            ser.hdr_len.eq(3),
            ser.n.eq(kcnt),
            ser.eb8.eq(0),
        ]
        return m


class BobSift(wiring.Component):
    """Bob's pending queue, DETECTIONS sender and SIFT_APPLY executor.

    * ``can_detect``: records enabled, a record on ``records`` and room in the pending queue;
      ``start_det`` then takes records while ``records`` stays valid, up to
      ``min(30, room)``, into a staging buffer (bit field cleared unless ``record_bits``) and
      pushes ``(slot, basis, bit)`` (true bit) into the pending queue, then sends one
      DETECTIONS frame (none if the stream went invalid before the first record).
    * ``start`` (SIFT_APPLY): the entry reader assembles each answer (7 clocks); the merge
      compares it with the queue head (the queue memory's output, registered; a registered
      signed 48-bit compare, then the action: 2 clocks per step, 3 after a pop): older head -> pop, ``sift_unanswered``; same slot -> pop, consume,
      ``sift_detected`` (OK and not blank), ``sift_sifted`` + key buffer (kept), ``sift_class``
      = ``2 * intensity + basis`` (Alice's intensity, Bob's basis); otherwise
      ``sift_unmatched``. Then SIFTED_KEY from the key buffer (the same 32 x 64 memory as
      the staging buffer: never used at the same time).

    ``pending_level``: entries in the pending queue (a ``pending_depth`` x 50 memory FIFO).
    """

    def __init__(self, pending_depth: int = 1024):
        if int(pending_depth) != pending_depth or pending_depth < 1:
            raise ValueError(f"pending_depth = {pending_depth!r} must be an integer >= 1")
        self.pending_depth = int(pending_depth)
        super().__init__({
            **_common_ports(),
            "start_det": In(1),
            "can_detect": Out(1),
            "records": In(stream.Signature(64)),
            "record_bits": In(1),
            "records_enable": In(1),
            "pending_level": Out(range(self.pending_depth + 1)),
            "sift_unanswered": Out(1),
            "sift_unmatched": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        D = self.pending_depth
        m.submodules.ser = ser = EntrySerializer()
        # Collisions (hdl/bram.py): the serializer reads `buf` only while SEND, when nothing
        # writes it (its idle reads are refreshed every clock); `pmem` is written only in
        # COLLECT and its head is read (every clock) for CMP, which comes >= 2 clocks later.
        m.submodules.buf = buf = bram(64, SIFT_MAX_ENTRIES)
        bw = buf.write_port()
        br = read_port(m, buf, bw, platform=platform, name="br")
        m.d.comb += [br.addr.eq(ser.mem_addr), ser.mem_data.eq(br.data)]
        m.submodules.pmem = pmem = bram(SLOT_BITS + 2, D)
        pw = pmem.write_port()
        pr = read_port(m, pmem, pw, platform=platform, name="pr")

        level = self.pending_level
        wp = Signal(range(D))
        rp = Signal(range(D))
        rp_next = Signal(range(D))
        wp_next = Signal(range(D))
        pop = Signal()
        push = Signal()
        m.d.comb += [
            rp_next.eq(Mux(rp == D - 1, 0, rp + 1)),
            wp_next.eq(Mux(wp == D - 1, 0, wp + 1)),
            pr.addr.eq(Mux(pop, rp_next, rp)),         # pr.data = head in the next cycle
            pw.addr.eq(wp),
            pw.en.eq(push),
            self.can_detect.eq(self.records_enable & self.records.valid & (level != D)),
        ]
        with m.If(pop):
            m.d.sync += [rp.eq(rp_next), level.eq(level - 1)]
        with m.If(push):
            m.d.sync += [wp.eq(wp_next), level.eq(level + 1)]

        rd = _EntryReader(m, self)
        count = Signal(_N)
        req_seq = Signal(8)
        kcnt = Signal(_N)
        done = Signal(_N)                   # answers consumed
        n = Signal(range(MAX_DETECTION_RECORDS + 1))
        limit = Signal(range(MAX_DETECTION_RECORDS + 1))
        room = Signal(range(D + 1))
        m.d.comb += room.eq(D - level)

        # merge: head register (the queue memory's output, registered), then a registered
        # compare (CMP), then the action (ACT); after a pop the new head needs one more clock
        # (WAIT) to reach the head register.
        head = Signal(SLOT_BITS + 2)
        m.d.sync += head.eq(pr.data)
        older = Signal()
        equal = Signal()
        head_slot = head[:SLOT_BITS]
        head_basis = head[SLOT_BITS]
        head_bit = head[SLOT_BITS + 1]
        a_slot = rd.out_slot
        a_keep = rd.out_byte[0]
        a_inten = rd.out_byte[1:3]
        a_ok = Signal()
        m.d.comb += a_ok.eq((rd.out_byte[3:5] == CHOICE_OK) & (a_inten != INTENSITY_BLANK))

        m.d.sync += [self.sift_detected.eq(0), self.sift_sifted.eq(0),
                     self.sift_unanswered.eq(0), self.sift_unmatched.eq(0)]

        rec = self.records.payload
        c = self.content
        with m.FSM(name="bob_sift") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    rd.start(m, self.count)
                    m.d.sync += [count.eq(self.count), req_seq.eq(self.req_seq), kcnt.eq(0), done.eq(0)]
                    m.next = "CMP"
                with m.Elif(self.start_det):
                    m.d.sync += [n.eq(0), limit.eq(Mux(room < MAX_DETECTION_RECORDS, room, MAX_DETECTION_RECORDS))]
                    m.next = "COLLECT"

            with m.State("COLLECT"):
                m.d.comb += [self.busy.eq(1), self.records.ready.eq(n != limit)]
                with m.If(self.records.valid & (n != limit)):
                    m.d.comb += [
                        push.eq(1),
                        pw.data.eq(Cat(rec[:SLOT_BITS + 2])),
                        bw.addr.eq(n),
                        bw.data.eq(Cat(rec[:RECORD_BIT_BIT], rec[RECORD_BIT_BIT] & self.record_bits,
                                       rec[RECORD_BIT_BIT + 1:])),
                        bw.en.eq(1),
                    ]
                    m.d.sync += n.eq(n + 1)
                with m.Else():
                    with m.If(n == 0):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += ser.start.eq(1)
                        m.next = "SEND"

            with m.State("CMP"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [older.eq((level != 0) & (head_slot - a_slot)[SLOT_BITS - 1]),
                             equal.eq((level != 0) & (head_slot == a_slot))]
                with m.If(done == count):
                    m.d.comb += ser.start.eq(1)
                    m.next = "SEND"
                with m.Elif(rd.out_valid):
                    m.next = "ACT"

            with m.State("ACT"):
                m.d.comb += self.busy.eq(1)
                m.next = "CMP"
                with m.If(older):
                    m.d.comb += pop.eq(1)
                    m.d.sync += self.sift_unanswered.eq(1)
                    m.next = "WAIT"
                with m.Else():
                    m.d.sync += [rd.out_valid.eq(0), done.eq(done + 1)]
                    with m.If(equal):
                        m.d.comb += pop.eq(1)
                        m.next = "WAIT"
                        kept = a_ok & a_keep
                        m.d.comb += [
                            bw.addr.eq(kcnt[:5]),
                            bw.data.eq(Cat(a_slot, head_bit, head_basis, a_inten)),
                            bw.en.eq(kept),
                        ]
                        m.d.sync += [
                            self.sift_detected.eq(a_ok),
                            self.sift_sifted.eq(kept),
                            self.sift_class.eq(Cat(head_basis, a_inten)),
                            kcnt.eq(kcnt + kept),
                        ]
                    with m.Else():
                        m.d.sync += self.sift_unmatched.eq(1)

            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                m.next = "CMP"

            with m.State("SEND"):
                m.d.comb += [self.busy.eq(1), c.valid.eq(ser.content.valid),
                             c.payload.eq(ser.content.payload), ser.content.ready.eq(c.ready)]
                with m.If(~ser.busy):
                    m.next = "IDLE"

        # The serializer samples its job at ser.start: DETECTIONS when started from COLLECT,
        # SIFTED_KEY when started from CMP.
        det_job = Signal()
        m.d.comb += [det_job.eq(fsm.ongoing("COLLECT")), ser.eb8.eq(det_job)]
        with m.If(det_job):
            m.d.comb += [ser.hdr.eq(Cat(Const(MsgType.DETECTIONS, 8), n)), ser.hdr_len.eq(2), ser.n.eq(n)]
        with m.Else():
            m.d.comb += [ser.hdr.eq(Cat(Const(MsgType.SIFTED_KEY, 8), req_seq, kcnt)), ser.hdr_len.eq(3),
                         ser.n.eq(kcnt)]
        return m
