"""Sync acquisition: find Alice's frame markers in the sync bits, lock Bob's slot numbering,
and track a clock offset between Alice and Bob.

See ``docs/receiver.md`` ("Sync acquisition") and ``docs/transmitter.md`` ("Sync marker").
Everything is counted in *running clocks* (``run`` high); the local slot counter starts at 0
and advances by ``P`` per running clock; local slot ``n`` is lane ``n % P`` of running clock
``n // P``. A *valid marker* is a 72-bit window of sync bits (preamble ``0xF9A8``, 48-bit
frame start ``f``, CRC-8/SMBUS of ``f``) ending in any lane; its implied offset is
``f - first_slot (mod 2**48)``, ``first_slot`` = local slot of its first bit. The preamble
does not overlap itself at any shift below 16, so at most one preamble ends per clock
(``P <= 4``); the lowest lane is taken in any case.

Timing (``LATENCY = 7``): the outputs seen in running clock ``u`` reflect the sync bits of
running clocks ``< u - 6``. A marker whose last bit is presented in running clock ``t`` is
*committed* at the clock edge ending running clock ``t + 6``; its pulse is seen in running
clock ``t + 7``, as is the new ``locked`` / ``offset`` / ``drift_slots``. The pipeline only
advances in running clocks, so the offset is exact whatever the run pattern (the commit
computes ``first_slot`` from the local counter of the marker's own clock).

Commit rules, at the edge ending each running clock, with ``Lc = max(loss_frames, 1) * F / P``
running clocks, a timer reloaded with ``Lc`` by every good marker, slip or acquisition, and
``delta`` = implied offset - ``offset`` as a signed number (mod 2**48, in [-2**47, 2**47)):

1. ``relock`` high: unlock; a marker committed in that clock is ignored (no pulse). ``relock``
   acts in any cycle, running or not.
2. locked, valid marker with ``delta == 0``: ``marker_good``, reload the timer.
3. locked, valid marker with ``0 < |delta| <= track_slots``: a *slip* (Alice's and Bob's
   clocks drifted by ``delta`` slots since the last good marker): ``marker_slip``,
   ``offset := implied offset``, ``drift_slots += delta``, reload the timer.
   ``track_slots = 0`` turns tracking off.
4. locked otherwise: a valid marker is a ``marker_mismatch``; then if the timer is 0, lose
   the lock (``lock_lost``), else decrement it. So lock is lost at the ``Lc + 1``-th running
   clock after the last good marker's (or slip's) commit without one in between.
5. unlocked, valid marker: lock (``lock_acquired``), ``offset := implied offset``,
   ``drift_slots := 0``, reload.

``offset`` and ``drift_slots`` keep their values when the lock is lost. ``drift_slots`` is
the sum of the slips since the lock was acquired (32-bit two's complement, wraps). Pulses are
one running clock long: they are registered at the commit edge and shown (``& run``) in the
next running clock.
"""
import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .sync import (
    FRAME_LOG2_MAX, FRAME_LOG2_MIN, SLOT_BITS, SYNC_CRC_BITS, SYNC_MARKER_BITS, SYNC_PREAMBLE,
    SYNC_PREAMBLE_BITS, SYNC_TIMESTAMP_BITS, crc8_smbus,
)

__all__ = ["SYNC_RX_LATENCY", "TRACK_BITS", "DRIFT_BITS", "SyncReceiver", "sync_rx_model",
           "find_sync_markers"]

SYNC_RX_LATENCY = 7            # running clocks from a marker's last bit to its pulse
TRACK_BITS = 8                 # width of ``track_slots``: slips of up to 255 slots
DRIFT_BITS = 32                # width of ``drift_slots``
_COMMIT_DELAY = SYNC_RX_LATENCY - 1
_MOD = 1 << SLOT_BITS
_PRE = [(SYNC_PREAMBLE >> (SYNC_PREAMBLE_BITS - 1 - k)) & 1 for k in range(SYNC_PREAMBLE_BITS)]
_TS0 = SYNC_PREAMBLE_BITS                           # window index of the timestamp's MSB
# CRC-8 is linear (init 0, no xorout): column i = CRC of the slot index 1 << i
_CRC_COLS = [crc8_smbus((1 << i).to_bytes(6, "big")) for i in range(SLOT_BITS)]
_CRC_TABLE = np.array([crc8_smbus(bytes([b])) for b in range(256)], dtype=np.uint8)


def _check_params(P, frame_log2):
    if P not in (1, 2, 4):
        raise ValueError(f"slots_per_clock must be 1, 2 or 4, not {P!r}")
    if int(frame_log2) != frame_log2 or not FRAME_LOG2_MIN <= frame_log2 <= FRAME_LOG2_MAX:
        raise ValueError(f"frame_log2 = {frame_log2!r} outside "
                         f"[{FRAME_LOG2_MIN}, {FRAME_LOG2_MAX}]")
    return int(P), int(frame_log2)


class SyncReceiver(wiring.Component):
    """Marker search over all ``P`` alignments per clock, lock state and offset.

    Pipeline (all stages enabled by ``run``): shift register of the last ``72 + P - 1``
    bits -> per lane preamble match and CRC syndrome (XOR trees) -> lane select, frame
    start, ``first_slot`` -> implied offset (48-bit subtraction) -> ``implied - offset``
    (48-bit subtraction) -> classify (zero, or a slip within ``track_slots``: AND trees and
    an 8-bit compare) -> commit. See the module docstring for the rules and the timing. At
    most ~3 LUT levels or one carry chain per stage (out-of-context nextpnr-ecp5,
    LFE5U-25F, P = 4, F = 2**12: 165 MHz at speed grade 6, 221 MHz at grade 8; without
    tracking, same run: 168 / 215 MHz; the critical path is the ``first_slot`` -> implied
    offset chain either way).

    Ports
    -----
    bits : In(P)
        Bit ``p``: sync bit of local slot ``local_slot + p``.
    run : In(1)
        Running clock: shift ``bits`` in, advance everything by one clock.
    loss_frames : In(8)
        Frames without a good marker before the lock is lost (0 counts as 1); read when the
        timer is reloaded.
    relock : In(1)
        Drop the lock now (the next valid marker locks again).
    track_slots : In(8)
        Largest ``|delta|`` (slots) followed as a slip while locked; 0 = no tracking. Read
        two running clocks before a marker's commit.
    locked : Out(1)
    offset : Out(48)
        Alice's slot index = local slot index + ``offset`` (mod 2**48).
    local_slot : Out(48)
        Local slot index of lane 0 of this clock (0 after reset, ``+P`` per running clock).
    drift_slots : Out(signed(32))
        Sum of the slips since the lock was acquired.
    marker_good, marker_slip, marker_mismatch, lock_acquired, lock_lost : Out(1)
        One-running-clock pulses.
    """

    LATENCY = SYNC_RX_LATENCY

    def __init__(self, slots_per_clock: int, frame_log2: int = 12):
        self.P, self.frame_log2 = _check_params(slots_per_clock, frame_log2)
        super().__init__({
            "bits": In(self.P),
            "run": In(1),
            "loss_frames": In(8),
            "relock": In(1),
            "track_slots": In(TRACK_BITS),
            "locked": Out(1),
            "offset": Out(SLOT_BITS),
            "local_slot": Out(SLOT_BITS),
            "drift_slots": Out(signed(DRIFT_BITS)),
            "marker_good": Out(1),
            "marker_slip": Out(1),
            "marker_mismatch": Out(1),
            "lock_acquired": Out(1),
            "lock_lost": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        P, L = self.P, self.frame_log2
        lp = P.bit_length() - 1
        M = SYNC_MARKER_BITS
        run = self.run
        en = m.d.sync

        # Stage 0: shift register; sr[j] = sync bit of local slot local_slot - W + j.
        W = M + P - 1
        sr = Signal(W)
        with m.If(run):
            en += [sr.eq(Cat(sr[P:], self.bits)), self.local_slot.eq(self.local_slot + P)]

        # Stage 1: per lane p, the window sr[p:p+72] (marker ending in lane p of the clock
        # just shifted in): preamble match and CRC syndrome. a_base = first slot of lane 0's
        # window = local_slot - P - 71.
        pre_const = Const(sum(b << k for k, b in enumerate(_PRE)), SYNC_PREAMBLE_BITS)
        a_pre = Signal(P)
        a_synd = [Signal(SYNC_CRC_BITS, name=f"a_synd{p}") for p in range(P)]
        a_ts = Signal(SYNC_TIMESTAMP_BITS + P - 1)
        a_base = Signal(SLOT_BITS)
        with m.If(run):
            for p in range(P):
                win = sr[p:p + M]
                f_bit = lambda i: win[_TS0 + SYNC_TIMESTAMP_BITS - 1 - i]   # bit i of f
                en += a_pre[p].eq(win[:SYNC_PREAMBLE_BITS] == pre_const)
                for j in range(SYNC_CRC_BITS):
                    taps = [f_bit(i) for i in range(SLOT_BITS) if (_CRC_COLS[i] >> j) & 1]
                    en += a_synd[p][j].eq(Cat(*taps, win[M - 1 - j]).xor())
            en += [
                a_ts.eq(sr[_TS0:_TS0 + SYNC_TIMESTAMP_BITS + P - 1]),
                a_base.eq(self.local_slot - (P + M - 1)),
            ]

        # Stage 2: lowest lane with a preamble; valid iff its CRC matches.
        b_valid = Signal()
        b_f = Signal(SLOT_BITS)
        b_first = Signal(SLOT_BITS)
        valid, f, lane = Const(0, 1), Const(0, SLOT_BITS), Const(0, max(lp, 1))
        for p in reversed(range(P)):
            sel = a_pre[p]
            valid = Mux(sel, a_synd[p] == 0, valid)
            f = Mux(sel, Cat(a_ts[p + SYNC_TIMESTAMP_BITS - 1 - i] for i in range(SLOT_BITS)), f)
            lane = Mux(sel, p, lane)
        with m.If(run):
            en += [b_valid.eq(valid), b_f.eq(f), b_first.eq(a_base + lane)]

        # Stage 3: implied offset. `c_off` changes only with a valid marker and is held until
        # the next one (>= 4 clocks later, below), so stages 4 to 6 use it directly instead of
        # carrying 48-bit copies along the pipeline.
        c_valid = Signal()
        c_off = Signal(SLOT_BITS)
        with m.If(run):
            en += c_valid.eq(b_valid)
            with m.If(b_valid):
                en += c_off.eq(b_f - b_first)

        # Stage 4: difference to the current offset. (Preamble matches are >= 16 slots, i.e.
        # >= 4 clocks, apart, so a commit never changes `offset` between a marker's
        # subtraction here and its commit two clocks later.)
        d_valid = Signal()
        d_diff = Signal(SLOT_BITS)
        with m.If(run):
            en += [d_valid.eq(c_valid), d_diff.eq(c_off - self.offset)]

        # Stage 5: classify: zero, or a slip 0 < |delta| <= track_slots (delta in [-255, 255]:
        # bits 8..47 all equal to the sign, magnitude of the low 9 bits within the window).
        T = TRACK_BITS
        e_valid = Signal()
        e_match = Signal()
        e_slip = Signal()
        e_delta = Signal(signed(T + 1))
        hi_zero = d_diff[T:] == 0
        hi_ones = d_diff[T:] == (1 << (SLOT_BITS - T)) - 1
        low = d_diff[:T]
        pos = hi_zero & (low != 0) & (low <= self.track_slots)
        neg = hi_ones & (low + self.track_slots)[T]             # 256 - low <= track_slots
        with m.If(run):
            en += [e_valid.eq(d_valid), e_match.eq(hi_zero & (low == 0)), e_slip.eq(pos | neg),
                   e_delta.eq(d_diff[:T + 1])]

        # Stage 6: commit.
        timer_bits = 8 + L - lp
        frames = Mux(self.loss_frames == 0, 1, self.loss_frames)
        limit = Cat(Const(0, L - lp), frames)                 # loss_frames * F / P clocks
        timer = Signal(timer_bits)
        timer_zero = Signal()
        pulses = [Signal(name=f"{n}_r") for n in ("good", "slip", "mismatch", "acquired", "lost")]
        good_r, slip_r, mismatch_r, acquired_r, lost_r = pulses
        with m.If(self.relock):
            en += self.locked.eq(0)
            with m.If(run):
                en += [s.eq(0) for s in pulses]
        with m.Elif(run):
            en += [s.eq(0) for s in pulses]
            with m.If(self.locked):
                with m.If(e_valid & e_match):
                    en += [good_r.eq(1), timer.eq(limit), timer_zero.eq(0)]
                with m.Elif(e_valid & e_slip):
                    en += [slip_r.eq(1), self.offset.eq(c_off),
                           self.drift_slots.eq(self.drift_slots + e_delta),
                           timer.eq(limit), timer_zero.eq(0)]
                with m.Else():
                    en += mismatch_r.eq(e_valid)
                    with m.If(timer_zero):
                        en += [lost_r.eq(1), self.locked.eq(0)]
                    with m.Else():
                        en += [timer.eq(timer - 1), timer_zero.eq(timer == 1)]
            with m.Elif(e_valid):
                en += [acquired_r.eq(1), self.locked.eq(1), self.offset.eq(c_off),
                       self.drift_slots.eq(0), timer.eq(limit), timer_zero.eq(0)]

        m.d.comb += [
            self.marker_good.eq(good_r & run),
            self.marker_slip.eq(slip_r & run),
            self.marker_mismatch.eq(mismatch_r & run),
            self.lock_acquired.eq(acquired_r & run),
            self.lock_lost.eq(lost_r & run),
        ]
        return m


def _crc8_rows(byte_rows: np.ndarray) -> np.ndarray:
    """CRC-8/SMBUS of each row of a (k, nbytes) uint8 array."""
    crc = np.zeros(byte_rows.shape[0], dtype=np.uint8)
    for j in range(byte_rows.shape[1]):
        crc = _CRC_TABLE[crc ^ byte_rows[:, j]]
    return crc


def find_sync_markers(P: int, bits) -> dict:
    """Every window of the sync-bit stream that carries a preamble, at most one per clock.

    ``bits`` (n, P) bool, running clock by lane. Returns a dict of arrays over the windows
    found: ``clock`` and ``lane`` of the last bit, ``first_slot`` (local slot of the first
    bit), ``frame_start``, ``crc_ok`` (bool) and ``offset = frame_start - first_slot`` mod 2**48.
    """
    bits = np.asarray(bits, dtype=bool)
    n = bits.shape[0]
    if bits.shape != (n, P):
        raise ValueError(f"bits must have shape (n, {P}), not {bits.shape}")
    s = bits.ravel()
    M = SYNC_MARKER_BITS
    starts = max(s.size - M + 1, 0)
    # first slots k of windows: filter on the preamble's leading ones, then gather the rest
    lead = next(i for i, b in enumerate(_PRE) if not b)            # 5 leading ones
    cand = np.ones(starts, dtype=bool)
    for k in range(lead):
        cand &= s[k:k + starts]
    k0 = np.flatnonzero(cand)
    for k in range(lead, SYNC_PREAMBLE_BITS):
        k0 = k0[s[k0 + k] == bool(_PRE[k])]
    end = k0 + (M - 1)
    clock, lane = end // P, end % P
    first = np.ones(k0.size, dtype=bool)                          # lowest lane per clock
    first[1:] = clock[1:] != clock[:-1]
    k0, clock, lane = k0[first], clock[first], lane[first]
    body = s[k0[:, None] + np.arange(_TS0, M)]                     # (k, 56): timestamp, CRC
    packed = np.packbits(body, axis=1)                             # (k, 7) big-endian bytes
    f = np.zeros(k0.size, dtype=np.uint64)
    for j in range(6):
        f = (f << np.uint64(8)) | packed[:, j].astype(np.uint64)
    crc_ok = _crc8_rows(packed[:, :6]) == packed[:, 6]
    offset = (f - k0.astype(np.uint64)) & np.uint64(_MOD - 1)
    return {"clock": clock, "lane": lane, "first_slot": k0, "frame_start": f,
            "crc_ok": crc_ok, "offset": offset}


def sync_rx_model(P: int, frame_log2: int, bits, loss_frames: int, relock=None,
                  track_slots: int = 0) -> dict:
    """Model of :class:`SyncReceiver`, per running clock.

    ``bits`` (n, P) bool: the sync bits of running clocks ``0..n-1`` (local slots from 0).
    ``loss_frames`` in [0, 255] (0 counts as 1), constant. ``relock``: optional (n,) bool,
    the ``relock`` input in each running clock (a relock in a stopped cycle is not modelled).
    ``track_slots`` in [0, 255], constant (0: no tracking).
    Returns per-clock arrays (index = running clock, the value the gateware shows in it):
    ``locked``, ``offset`` (uint64), ``drift_slots`` (int64, 32-bit two's complement range),
    ``marker_good``, ``marker_slip``, ``marker_mismatch``, ``lock_acquired``, ``lock_lost``,
    and ``markers`` (the :func:`find_sync_markers` dict of the valid markers).
    The gateware's ``local_slot`` in clock ``u`` is ``u * P``. Vectorised search; the state
    machine walks the valid markers, relocks and losses only.
    """
    P, L = _check_params(P, frame_log2)
    if not 0 <= int(loss_frames) <= 255:
        raise ValueError(f"loss_frames = {loss_frames!r} outside [0, 255]")
    if not 0 <= int(track_slots) < (1 << TRACK_BITS):
        raise ValueError(f"track_slots = {track_slots!r} outside [0, {(1 << TRACK_BITS) - 1}]")
    track = int(track_slots)
    bits = np.asarray(bits, dtype=bool)
    n = bits.shape[0]
    Lc = max(int(loss_frames), 1) * (1 << L) // P
    found = find_sync_markers(P, bits)
    valid = {k: v[found["crc_ok"]] for k, v in found.items()}
    commits = (valid["clock"] + _COMMIT_DELAY).tolist()             # commit edge of each
    offsets = valid["offset"].tolist()
    if relock is None:
        relocks = []
    else:
        relock = np.asarray(relock, dtype=bool)
        if relock.shape != (n,):
            raise ValueError(f"relock must have shape ({n},), not {relock.shape}")
        relocks = np.flatnonzero(relock).tolist()

    # walk the edges with an event, in order; a relock wins over a commit at the same edge
    events = sorted([(e, 0, None) for e in relocks] + [(e, 1, o) for e, o in zip(commits, offsets)
                                                       if e < n])
    locked, off, reload, drift = False, 0, 0, 0
    changes = [(0, False, 0, 0)]             # (edge, locked, offset, drift) after that edge
    pulse = {k: [] for k in ("marker_good", "marker_slip", "marker_mismatch", "lock_acquired",
                             "lock_lost")}
    skip = None
    for e, kind, o in events:
        if locked and reload + Lc + 1 < e:
            locked = False
            pulse["lock_lost"].append(reload + Lc + 1)
            changes.append((reload + Lc + 1, False, off, drift))
        if kind == 0:
            skip = e
            if locked:
                locked = False
                changes.append((e, False, off, drift))
            continue
        if e == skip:                                # relock in the same clock
            continue
        delta = (o - off + _MOD // 2) % _MOD - _MOD // 2           # signed, [-2**47, 2**47)
        if not locked:
            locked, off, reload, drift = True, o, e, 0
            pulse["lock_acquired"].append(e)
            changes.append((e, True, off, drift))
        elif delta == 0:
            pulse["marker_good"].append(e)
            reload = e
        elif abs(delta) <= track:
            off, reload = o, e
            drift = (drift + delta + (1 << (DRIFT_BITS - 1))) % (1 << DRIFT_BITS) - (1 << (DRIFT_BITS - 1))
            pulse["marker_slip"].append(e)
            changes.append((e, True, off, drift))
        else:
            pulse["marker_mismatch"].append(e)
            if e == reload + Lc + 1:
                locked = False
                pulse["lock_lost"].append(e)
                changes.append((e, False, off, drift))
    if locked and reload + Lc + 1 < n:
        pulse["lock_lost"].append(reload + Lc + 1)
        changes.append((reload + Lc + 1, False, off, drift))

    # outputs in clock u reflect the edges < u
    out = {"locked": np.zeros(n, dtype=bool), "offset": np.zeros(n, dtype=np.uint64),
           "drift_slots": np.zeros(n, dtype=np.int64)}
    for (e, lk, of, dr), nxt in zip(changes, changes[1:] + [(n, None, None, None)]):
        out["locked"][e + 1:nxt[0] + 1] = lk
        out["offset"][e + 1:nxt[0] + 1] = of
        out["drift_slots"][e + 1:nxt[0] + 1] = dr
    for name, edges in pulse.items():
        a = np.zeros(n, dtype=bool)
        idx = np.asarray(edges, dtype=np.int64) + 1
        a[idx[idx < n]] = True
        out[name] = a
    out["markers"] = valid
    return out
