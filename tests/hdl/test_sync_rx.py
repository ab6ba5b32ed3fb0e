"""SyncReceiver gateware vs sync_rx_model; the model vs a per-clock reference; lock semantics;
clock-offset tracking (slips)."""
import gc
import time
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from qkdlink.hdl.sync import SYNC_MARKER_BITS, SYNC_PREAMBLE, decode_sync_marker, sync_bits_model
from qkdlink.hdl.sync_rx import SYNC_RX_LATENCY, SyncReceiver, find_sync_markers, sync_rx_model

MOD = 1 << 48
OUTPUTS = ("locked", "offset", "drift_slots", "marker_good", "marker_slip", "marker_mismatch",
           "lock_acquired", "lock_lost")
PULSES = OUTPUTS[3:]


def _scenario(P, L, seed, A0, delta, loss_frames, pe=3e-4):
    """Sync bits of ``n`` running clocks: no signal (dark counts only) for ``z0`` clocks, then
    Alice's sync from her slot ``A0`` with random bit errors (rate ``pe``; some markers fail),
    her numbering jumping by ``delta`` slots at clock ``jump``, in a frame after its marker
    (fibre length change; no bit errors on the markers around it); the CRC
    of the first marker is corrupted on purpose. Returns the bits, the intact markers
    (``heads`` = local first slot, ``frames`` = frame start) and the facts the checks need."""
    rng = np.random.default_rng(seed)
    F = 1 << L
    fc = F // P                                            # clocks per frame
    z0 = int(rng.integers(fc, 2 * fc))
    h0 = z0 * P + (-A0) % F                                # first marker head (local slot)
    jump = (h0 + 6 * F + max(F // 2, 96)) // P            # in the 7th frame, after its marker
    n = jump + (max(loss_frames, 1) + 6) * fc
    j = np.arange(n * P, dtype=np.int64)
    start = z0 * P
    alice = (A0 + (j - start) + np.where(j >= jump * P, delta, 0)) % MOD
    bits = sync_bits_model(alice.astype(np.uint64), L)
    bits[:start] = rng.random(start) < 2e-3                # dark counts before the signal
    err = rng.random(n * P) < pe
    err[:start] = False
    for h in range(h0 + 5 * F, h0 + 9 * F, F):            # keep the markers around the jump
        err[h - F // 4:h + F // 4 + SYNC_MARKER_BITS] = False
    # marker heads fully inside the signal, not across the jump, without bit errors
    heads = np.flatnonzero((alice % F == 0) & (j >= start) & (j + SYNC_MARKER_BITS <= n * P))
    heads = heads[(alice[np.minimum(heads + 71, n * P - 1)] - alice[heads]) % MOD == 71]
    errs = np.cumsum(np.concatenate([[0], err]))
    heads = heads[errs[heads + SYNC_MARKER_BITS] == errs[heads]]
    corrupt = int(heads[0])
    err[corrupt + 70] = True                              # a CRC bit: the marker must fail
    heads = heads[1:]
    bits ^= err
    clocks = (heads + 71) // P
    return dict(bits=bits.reshape(n, P), n=n, fc=fc, jump=jump, heads=heads, clocks=clocks,
                frames=alice[heads].astype(np.uint64), corrupt_clock=(corrupt + 71) // P,
                off1=(A0 - start) % MOD, off2=(A0 - start + delta) % MOD)


def _with_relock(P, L, sc, loss_frames, track=0):
    """Two relocks: in the clock that shows the first good marker's pulse (``r0``), and exactly
    at the commit edge of an intact marker while locked with the new offset (``r``, the
    previous frame's marker was good): that marker must be ignored, the next one lock."""
    lat = SYNC_RX_LATENCY
    res = sync_rx_model(P, L, sc["bits"], loss_frames, track_slots=track)
    r0 = int(np.flatnonzero(res["marker_good"])[0])
    acq = np.flatnonzero(res["lock_acquired"])
    u2 = acq[acq > sc["jump"] + lat][0]
    c = sc["clocks"]
    cand = c[np.isin(c - sc["fc"], c) & (c - sc["fc"] + lat >= u2)]
    r = int(cand[0]) + lat - 1
    relock = np.zeros(sc["n"], dtype=bool)
    relock[[r0, r]] = True
    assert r0 < sc["jump"]
    return relock, (r0, r)


def _check_semantics(P, L, sc, res, loss_frames, r):
    Lc = max(loss_frames, 1) * (1 << L) // P
    lat = SYNC_RX_LATENCY
    # the valid markers are exactly the intact ones, and decode to the same frame starts
    mk = res["markers"]
    assert mk["first_slot"].tolist() == sc["heads"].tolist()
    assert mk["frame_start"].tolist() == sc["frames"].tolist()
    s = sc["bits"].ravel()
    for k, f in zip(sc["heads"][:3], sc["frames"][:3]):
        assert decode_sync_marker(s[k:k + SYNC_MARKER_BITS]) == f
    clocks = sc["clocks"]
    want_off = dict(zip((clocks + lat).tolist(),
                        np.where(clocks < sc["jump"], sc["off1"], sc["off2"]).tolist()))
    acq, lost, good, mism = (np.flatnonzero(res[k]) for k in
                             ("lock_acquired", "lock_lost", "marker_good", "marker_mismatch"))
    off = res["offset"]
    # lock at the first valid marker (the one before it has a bad CRC), right offset
    assert not any(res[k][sc["corrupt_clock"] + lat] for k in PULSES)
    assert acq[0] == clocks[0] + lat and off[acq[0]] == sc["off1"]
    # every pulse comes from an intact marker and carries its offset
    assert all(off[u] == want_off[u] for u in np.concatenate([acq, good]))
    assert good.size >= 3
    # the only mismatches: markers after the jump while locked with the old offset
    assert mism.size >= 1 and all(want_off[u] == sc["off2"] and off[u] == sc["off1"] for u in mism)
    # every loss: Lc + 1 clocks after the last good marker or acquisition
    reload = np.sort(np.concatenate([acq, good]))
    assert all(u == reload[reload < u].max() + Lc + 1 for u in lost)
    # after the jump: lost, then re-acquired at the next valid marker with the new offset
    u_lost = lost[lost > sc["jump"] + lat][0]
    assert acq[acq > u_lost][0] == clocks[clocks + lat > u_lost][0] + lat
    assert off[acq[acq > u_lost][0]] == sc["off2"]
    # relock while a pulse shows: lock dropped, the pulse not repeated, the next marker locks
    r0, r = r
    assert res["marker_good"][r0] and res["locked"][r0] and not res["locked"][r0 + 1]
    assert not any(res[k][r0 + 1] for k in PULSES)
    assert acq[acq > r0][0] == clocks[clocks + lat > r0 + 1][0] + lat
    # relock at a commit edge: lock dropped, that marker ignored, the next one locks
    assert res["locked"][r] and not res["locked"][r + 1]
    assert not any(res[k][r + 1] for k in PULSES)
    assert acq[acq > r][0] == clocks[clocks + lat > r + 1][0] + lat
    assert off[-1] == sc["off2"]
    assert not res["marker_slip"].any() and not res["drift_slots"].any()


def _simulate(dut, bits, loss_frames, relock, seed, p_stop=0.1, track=0):
    """Run the gateware with random stopped cycles (garbage on ``bits``); return the outputs
    seen in the running cycles, and check that pulses never show in stopped cycles."""
    rng = np.random.default_rng(seed)
    n, P = bits.shape
    words = (bits.astype(np.int64) << np.arange(P)).sum(axis=1).tolist()
    got = {k: [] for k in OUTPUTS + ("local_slot",)}
    stopped_pulses = []

    async def tb(ctx):
        ctx.set(dut.loss_frames, loss_frames)
        ctx.set(dut.track_slots, track)
        t = 0
        while t < n:
            if rng.random() < p_stop:
                ctx.set(dut.run, 0)
                ctx.set(dut.relock, 0)
                ctx.set(dut.bits, int(rng.integers(0, 1 << P)))
                if any(ctx.get(getattr(dut, k)) for k in PULSES):
                    stopped_pulses.append(t)
            else:
                ctx.set(dut.run, 1)
                ctx.set(dut.relock, int(relock[t]))
                ctx.set(dut.bits, words[t])
                for k in got:
                    got[k].append(ctx.get(getattr(dut, k)))
                t += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert not stopped_pulses, stopped_pulses[:5]
    return got


def _compare(got, res, P):
    n = len(got["locked"])
    assert got["local_slot"] == [(P * u) % MOD for u in range(n)]
    for k in OUTPUTS:
        g = np.array(got[k], dtype=np.int64 if k == "drift_slots" else np.uint64)
        w = res[k].astype(g.dtype)
        bad = np.flatnonzero(g != w)
        assert bad.size == 0, (k, bad[:5].tolist(), g[bad[:5]].tolist(), w[bad[:5]].tolist())


@pytest.mark.parametrize("L", [7, 10])
@pytest.mark.parametrize("P", [1, 2, 4])
def test_sync_receiver_matches_model(P, L):
    """Lock at the first marker, bit errors, a bad CRC, a fibre length change (loss after
    loss_frames frames, re-acquisition with the new offset), relock; random stopped clocks.
    Frame 2**7: Alice's numbering goes back by P slots (markers one clock late), so a
    mismatch arrives in the very clock the lock is lost; 2**10: forward by a random number of
    frames + F/4 (markers a quarter frame early), loss_frames = 0 (-> 1). Tracking on but
    the jump outside its window: track_slots = P - 1 (|delta| one above it), resp. 255."""
    seed = 10 * L + P
    if L == 7:
        loss_frames, delta, track = 2, -P, P - 1
    else:
        F = 1 << L
        loss_frames, delta, track = 0, int(np.random.default_rng(seed).integers(1, 1 << 30)) * F + F // 4, 255
    sc = _scenario(P, L, seed, A0=(1 << 40) + 12345, delta=delta, loss_frames=loss_frames)
    relock, r = _with_relock(P, L, sc, loss_frames, track)
    res = sync_rx_model(P, L, sc["bits"], loss_frames, relock=relock, track_slots=track)
    _check_semantics(P, L, sc, res, loss_frames, r)
    got = _simulate(SyncReceiver(P, L), sc["bits"], loss_frames, relock, seed, track=track)
    _compare(got, res, P)


def test_sync_receiver_slot_wrap():
    """Alice's numbering and the offset wrap at 2**48 without a mismatch."""
    P, L, loss_frames = 4, 7, 1
    sc = _scenario(P, L, 5, A0=MOD - 3 * (1 << L) + 17, delta=1 << 47, loss_frames=loss_frames)
    relock, r = _with_relock(P, L, sc, loss_frames, 255)
    res = sync_rx_model(P, L, sc["bits"], loss_frames, relock=relock, track_slots=255)
    _check_semantics(P, L, sc, res, loss_frames, r)
    assert (sc["frames"][:3] > MOD - 4 * (1 << L)).any() and (sc["frames"][:6] < 1 << L).any()
    _compare(_simulate(SyncReceiver(P, L), sc["bits"], loss_frames, relock, 5, track=255), res, P)


def _reference(P, L, bits, loss_frames, relock, track=0):
    """Per-clock reference of the gateware rules (slow; small n only), built on
    decode_sync_marker."""
    n = bits.shape[0]
    s = np.concatenate([np.zeros(SYNC_MARKER_BITS, bool), bits.ravel()])   # pre-reset zeros
    Lc = max(loss_frames, 1) * (1 << L) // P
    pending = {}                     # commit clock -> implied offset
    out = {k: np.zeros(n, dtype={"offset": np.uint64, "drift_slots": np.int64}.get(k, bool))
           for k in OUTPUTS}
    locked, off, drift, timer, pulses = False, 0, 0, 0, dict.fromkeys(PULSES, False)
    for t in range(n):
        out["locked"][t], out["offset"][t], out["drift_slots"][t] = locked, off, drift
        for k in PULSES:
            out[k][t] = pulses[k]
        for p in range(P):                                  # marker ending in lane p of clock t
            e = t * P + p
            win = s[e + 1:e + 1 + SYNC_MARKER_BITS]
            if win[:16].tolist() == [bool((SYNC_PREAMBLE >> (15 - i)) & 1) for i in range(16)]:
                f = decode_sync_marker(win)
                if f is not None:
                    pending[t + SYNC_RX_LATENCY - 1] = (f - (e - 71)) % MOD
                break
        valid = t in pending
        o = pending.pop(t, None)
        pulses = dict.fromkeys(PULSES, False)
        if relock[t]:
            locked = False
        elif locked:
            delta = None if o is None else ((o - off) % MOD if (o - off) % MOD < MOD // 2
                                            else (o - off) % MOD - MOD)
            if valid and o == off:
                pulses["marker_good"], timer = True, Lc
            elif valid and abs(delta) <= track:
                pulses["marker_slip"], timer, off = True, Lc, o
                drift = (drift + delta + 2**31) % 2**32 - 2**31
            else:
                pulses["marker_mismatch"] = valid
                if timer == 0:
                    pulses["lock_lost"], locked = True, False
                else:
                    timer -= 1
        elif valid:
            pulses["lock_acquired"], locked, off, timer, drift = True, True, o, Lc, 0
    return out


@pytest.mark.parametrize("track", [0, 2])
@pytest.mark.parametrize("P", [1, 2, 4])
def test_model_matches_reference(P, track):
    """Random stress: dense bit errors, jumps back and forth by up to 3 slots, random relocks
    (some at commit edges), loss_frames = 1; tracking off, and on with a window of 2 slots
    (small jumps slip, a jump of 3 or jumps adding up beyond 2 between markers mismatch)."""
    rng = np.random.default_rng(50 + P)
    L, loss_frames = 7, 1
    n = 20000 // P
    j = np.arange(n * P, dtype=np.int64)
    shift = np.cumsum(np.where(rng.random(n * P) < 3e-3, rng.integers(-3, 4, n * P), 0))
    alice = (MOD - 5000 + j + shift) % MOD
    bits = sync_bits_model(alice.astype(np.uint64), L) ^ (rng.random(n * P) < 2e-3)
    bits = bits.reshape(n, P)
    relock = rng.random(n) < 0.002
    commits = find_sync_markers(P, bits)["clock"] + SYNC_RX_LATENCY - 1
    relock[rng.choice(commits[commits < n], 8, replace=False)] = True     # at commit edges
    res = sync_rx_model(P, L, bits, loss_frames, relock=relock, track_slots=track)
    ref = _reference(P, L, bits, loss_frames, relock, track)
    for k in OUTPUTS:
        bad = np.flatnonzero(res[k] != ref[k])
        assert bad.size == 0, (k, bad[:5].tolist())
    counts = {k: int(res[k].sum()) for k in PULSES}
    assert all(v >= 3 for k, v in counts.items() if k != "marker_slip"), counts
    assert (counts["marker_slip"] >= 3) == (track > 0), counts
    if track == 0:
        assert (res["marker_mismatch"] & res["lock_lost"]).any()      # in the same clock


def test_model_speed_and_steady_lock():
    """10^6 clocks, P = 4, frame 2**7 (31250 markers) in well under a second or two."""
    P, L, n = 4, 7, 1_000_000
    alice = np.arange(n * P, dtype=np.uint64) + np.uint64((1 << 40) + 12345)
    bits = sync_bits_model(alice, L).reshape(n, P)
    t0 = time.perf_counter()
    res = sync_rx_model(P, L, bits, 1)
    dt = time.perf_counter() - t0
    assert dt < 3.0, dt
    assert res["lock_acquired"].sum() == 1 and not res["lock_lost"].any()
    assert not res["marker_mismatch"].any()
    assert res["marker_good"].sum() == res["markers"]["clock"].size - 1
    assert (res["offset"][res["locked"]] == (1 << 40) + 12345).all()


def test_preamble_has_no_self_overlap():
    """What makes 'at most one preamble ends per clock' (and the stage-4 compare) safe."""
    pre = [(SYNC_PREAMBLE >> (15 - k)) & 1 for k in range(16)]
    assert all(pre[d:] != pre[:16 - d] for d in range(1, 16))


def test_find_markers_edge_cases():
    P, L = 2, 7
    assert find_sync_markers(P, np.zeros((10, P), bool))["clock"].size == 0
    bits = sync_bits_model(np.arange(256, dtype=np.uint64) + np.uint64(128 - 60), L).reshape(-1, P)
    mk = find_sync_markers(P, bits)
    assert mk["first_slot"].tolist() == [60] and mk["crc_ok"].all()
    assert mk["offset"].tolist() == [(128 - 60) % MOD]
    with pytest.raises(ValueError, match="shape"):
        find_sync_markers(4, bits)


@pytest.mark.parametrize("P, L", [(1, 24), (4, 7)])
def test_elaborates_at_limits(P, L):
    """Widest timer (8 + 24 bits) and the shortest frame: reset state, counter, no lock."""
    dut = SyncReceiver(P, L)

    async def tb(ctx):
        ctx.set(dut.run, 1)
        for _ in range(5):
            await ctx.tick()
        assert ctx.get(dut.local_slot) == 5 * P and not ctx.get(dut.locked)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()


def test_parameter_checks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="slots_per_clock"):
            SyncReceiver(3, 10)
        with pytest.raises(ValueError, match="frame_log2"):
            SyncReceiver(2, 6)
        gc.collect()
    with pytest.raises(ValueError, match="loss_frames"):
        sync_rx_model(1, 7, np.zeros((10, 1), bool), 256)
    with pytest.raises(ValueError, match="relock"):
        sync_rx_model(1, 7, np.zeros((10, 1), bool), 1, relock=np.zeros(9, bool))
    with pytest.raises(ValueError, match="track_slots"):
        sync_rx_model(1, 7, np.zeros((10, 1), bool), 1, track_slots=256)


def _drifting(P, L, seed, track):
    """Sync bits of a drifting link: Alice's numbering steps by -1 (Bob fast) between markers,
    once inside a marker (which breaks it), twice between two markers (a slip of -2), once by
    exactly ``track`` slots, then +1 steps, a fibre length change of ``track + 1`` slots
    (beyond the window), and -1 steps again; one step group per 2-3 frames. Returns the bits,
    Alice's slot index of every local slot, the steps (local slot, size) and the jump's slot."""
    rng = np.random.default_rng(seed)
    F = 1 << L
    n = 64 * F // P
    plan = [-1, -1, "in-marker", -1, -1, "double", track] + [1] * 4 + ["jump"] + [-1] * 4
    events, frame = [], 2
    for step in plan:
        base = frame * F + int(rng.integers(80, 100))           # between two markers
        if step == "double":
            events += [(base, -1), (base + int(rng.integers(1, 20)), -1)]
        elif step == "in-marker":
            events.append((frame * F + 30, -1))                   # inside the frame start
        elif step == "jump":
            events.append((base, track + 1))
        else:
            events.append((base, step))
        frame += 5 if step == "jump" else int(rng.integers(2, 4))
    assert frame * F < n * P
    j = np.arange(n * P, dtype=np.int64)
    shift = np.zeros(n * P, dtype=np.int64)
    for p, d in events:
        shift[p:] += d
    A0 = (1 << 40) + 777 * F                       # frames start at local multiples of F
    alice = (A0 + j + shift) % MOD
    bits = sync_bits_model(alice.astype(np.uint64), L).reshape(n, P)
    jump = next(p for p, d in events if d == track + 1)
    return bits, alice, events, jump


@pytest.mark.parametrize("P", [1, 2, 4])
def test_sync_receiver_tracks_slips(P):
    """Tracking: every step of Alice's grid is followed at the first valid marker after it
    (offset, drift_slots, marker_slip; the loss timer reloads), a step of exactly
    track_slots too, one beyond the window is a mismatch -> loss -> re-acquisition (drift
    restarts from 0). Detections are misnumbered exactly from a step until the revealing
    marker's commit. Gateware (random stopped clocks) == model == per-clock reference."""
    L, loss_frames, track = 7, 3, 3        # a step inside a marker breaks it: keep the lock
    bits, alice, events, jump = _drifting(P, L, 70 + P, track)
    n = bits.shape[0]
    lat = SYNC_RX_LATENCY
    res = sync_rx_model(P, L, bits, loss_frames, track_slots=track)
    relock = np.zeros(n, bool)
    ref = _reference(P, L, bits, loss_frames, relock, track)
    for k in OUTPUTS:
        bad = np.flatnonzero(res[k] != ref[k])
        assert bad.size == 0, (k, bad[:5].tolist())
    _compare(_simulate(SyncReceiver(P, L), bits, loss_frames, relock, 80 + P, track=track), res, P)

    acq, lost, slips = (np.flatnonzero(res[k]) for k in ("lock_acquired", "lock_lost", "marker_slip"))
    assert acq.size == 2 and lost.size == 1 and jump < lost[0] * P < acq[1] * P
    mk = res["markers"]
    # every valid marker committed while locked (apart from the mismatches) leaves the offset
    # its first slot really has
    j_of = mk["first_slot"].astype(np.int64)
    true_off = (alice[j_of] - j_of) % MOD          # no step inside a valid marker
    shown = mk["clock"] + lat
    for u, o in zip(shown, true_off):
        if u < n and res["locked"][u] and not res["marker_mismatch"][u]:
            assert int(res["offset"][u]) == int(o)
    # one slip per step group: 5 + 1 (double step, delta -2) + 1 (track) + 4 before the jump,
    # 4 after the re-acquisition; the marker with a step inside is not valid
    assert slips.size == 15 and (slips < lost[0]).sum() == 11
    assert res["marker_mismatch"].sum() >= 1
    before = np.diff(true_off[j_of < jump].astype(np.int64))
    assert sorted(set(before[before != 0].tolist())) == [-2, -1, 1, track]
    assert res["drift_slots"][lost[0]] == -5 - 2 + track + 4 and res["drift_slots"][-1] == -4
    # misnumbered slots while locked: exactly [step, commit of the next valid marker after it]
    local = np.arange(n * P)
    wrong = (res["offset"][local // P].astype(np.int64) + local) % MOD != alice
    wrong &= np.repeat(res["locked"], P)
    expect = np.zeros(n * P, bool)
    for p, d in events:
        nxt = mk["clock"][mk["first_slot"] >= p][0]
        expect[p:(nxt + lat) * P if p != jump else lost[0] * P] = True
    expect &= np.repeat(res["locked"], P)
    assert np.array_equal(wrong, expect)
