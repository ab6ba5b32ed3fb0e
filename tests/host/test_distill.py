"""Key distillation (host/distill.py) and `qkdlink distill` (host/distill_cli.py): identical keys,
the ledger's arithmetic, every abort path (tamper, replay, reorder, drop, QBER, mismatched
sessions, bad input), one run on real gateware co-simulation output, and the CLI."""
import argparse
import dataclasses
import json
import math
import os
import re
import stat

import numpy as np
import pytest

from qkdlink.host import distill as D
from qkdlink.host import distill_cli, estimation, fast_link, theory
from qkdlink.host.auth import ALICE_TO_BOB, BOB_TO_ALICE
from qkdlink.host.config import default_link_config

# A short link with decoy settings that give a positive finite key from ~2e5 sifted bits
# (measured: 15 km, 3e7 slots -> ~12k final bits with LDPC).
SOURCE = dict(p_signal=0.5, p_decoy=0.35, p_vacuum=0.15, mu_signal=0.6, mu_decoy=0.2)


def link_config(length_km=15.0, misalignment=0.01, **post):
    base = default_link_config()
    return dataclasses.replace(
        base, channel=dataclasses.replace(base.channel, length_km=length_km, misalignment=misalignment),
        source=dataclasses.replace(base.source, **SOURCE),
        postprocessing=dataclasses.replace(base.postprocessing, **{"eps_sec": 1e-6, **post}))


@pytest.fixture(scope="module")
def run15():
    cfg = link_config()
    return cfg, fast_link.simulate(cfg, slots=30_000_000, seed=3)


@pytest.fixture(scope="module")
def small():
    """A small output (no key at this size, but every message up to the estimate runs)."""
    cfg = link_config()
    return cfg, fast_link.simulate(cfg, slots=2_000_000, seed=11)


@pytest.fixture(scope="module")
def distilled(run15):
    cfg, r = run15
    return D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=7)


def test_identical_keys_and_ledger_arithmetic(run15, distilled):
    cfg, r = run15
    res, L = distilled, distilled.ledger
    assert L.keys_identical is True
    assert np.array_equal(res.alice_key, res.bob_key)
    assert res.alice_key.size == L.final_key_bits > 0
    b = L.blocks[0]
    assert b.method == "cascade"                         # auto, transcript tags: the lower f wins
    assert 0.005 < b.qber_test < 0.02 and b.verified
    # counts
    assert b.sifted_bits == r["sifted"] == b.key_basis_bits + b.test_basis_bits
    assert b.reconciled_bits == b.key_basis_bits - b.sampled_bits
    assert b.pa_input_bits == b.reconciled_bits - b.dropped_bits
    # the finite-key formula from its terms (estimation.secret_key_length, Lim 2014 Eq. (1))
    ell = (b.s_key_0 + b.s_key_1_times_1_minus_h_phase - b.disclosed_ec_bits - b.sampled_bits - b.dropped_bits
           - b.verification_bits - b.security_bits)
    assert b.pa_output_bits == math.floor(ell) == math.floor(b.key_length_unrounded)
    assert b.security_bits == pytest.approx(6 * math.log2(21 / 1e-6) + math.log2(2 / 1e-15))
    assert b.s_key_1_times_1_minus_h_phase == pytest.approx(
        b.s_key_1 * (1 - theory.binary_entropy(b.phase_error)))
    # independently from the counts through theory.lim2014_from_counts
    a = r["alice_rows"]
    ab, bb = a[:, 1], r["bob_rows"][:, 1]
    basis, inten = (ab >> 1) & 1, (ab >> 2) & 3
    nz = np.bincount(inten[basis == 0].astype(int), minlength=3)
    nx = np.bincount(inten[basis == 1].astype(int), minlength=3)
    mx = np.bincount(inten[(basis == 1) & ((ab ^ bb) & 1 == 1)].astype(int), minlength=3)
    s = cfg.source
    ref = theory.lim2014_from_counts(nz, nx, mx, r["slots"], (s.mu_signal, s.mu_decoy, s.mu_vacuum),
                                     (s.p_signal, s.p_decoy, s.p_vacuum), eps_sec=1e-6, eps_cor=1e-15,
                                     lambda_ec_bits=b.disclosed_ec_bits + b.sampled_bits + b.dropped_bits
                                     + b.verification_bits)
    assert b.pa_output_bits == ref["length_bits"]
    assert b.s_key_1 == pytest.approx(ref["s_key_1"])
    # authentication: each direction's transcript tagged before the key is released (a few tags,
    # not one per message); the pads used come back out of the new key
    assert 2 <= b.auth_messages <= 8
    assert b.auth_key_bits_consumed == 88 * b.auth_messages
    assert b.auth_replenish_bits == b.auth_key_bits_consumed
    assert b.final_key_bits == b.pa_output_bits - b.auth_replenish_bits
    assert b.eps_total == pytest.approx(b.eps_sec + b.eps_cor + b.auth_forgery_probability)
    assert 1.0 < b.f_measured < 1.6
    assert L.key_sha256_prefix == D.key_fingerprint(res.alice_key)[:16]


def test_same_seed_same_key_other_seed_other_key(run15, distilled):
    cfg, r = run15
    again = D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=7)
    assert D.key_fingerprint(again.alice_key) == D.key_fingerprint(distilled.alice_key)
    other = D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=8)
    assert D.key_fingerprint(other.alice_key) != D.key_fingerprint(distilled.alice_key)
    assert other.ledger.keys_identical


def test_cascade_round_trips_cost_authentication_key_only_per_message(run15, distilled):
    """Cascade's hundreds of round trips cost one tag each with per-message authentication — at
    this block size more one-time pad than the block yields (a clean key-length abort) — but only
    a few tags when each direction's transcript is authenticated once before the key is released."""
    cfg, r = run15
    per_message = D.DistillOptions(authentication="per-message")
    try:
        res = D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=7, method="cascade", options=per_message)
    except D.DistillAbort as e:
        assert e.reason == "key-length" and "authentication" in str(e)
        auth_bits = int(re.search(r"the (\d+) authentication key bits", str(e)).group(1))
    else:
        assert res.ledger.keys_identical and res.ledger.blocks[0].f_measured < 1.15
        auth_bits = res.ledger.blocks[0].auth_key_bits_consumed
    res = D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=7, method="cascade")
    b = res.ledger.blocks[0]
    assert res.ledger.keys_identical and b.f_measured < 1.15 and b.final_key_bits > 0
    assert auth_bits > 10 * b.auth_key_bits_consumed


def test_identical_keys_at_3_percent_qber():
    cfg = link_config(misalignment=0.03)
    r = fast_link.simulate(cfg, slots=60_000_000, seed=3)
    res = D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=7)
    b = res.ledger.blocks[0]
    assert 0.025 < b.qber_test < 0.035 and 0.025 < res.ledger.qber_key < 0.035
    assert res.ledger.keys_identical and np.array_equal(res.alice_key, res.bob_key)
    assert b.final_key_bits == res.alice_key.size > 0


def test_verification_failure_discards_the_block(run15, monkeypatch):
    """A reconciliation that leaves one error (simulated by flipping a bit of Bob's result) is
    caught by the verification hash: abort, no key."""
    class WrongLdpcBob(D.LdpcBob):
        def reconcile(self, bob_bits, ask_alice, qber_estimate):
            corrected, stats = super().reconcile(bob_bits, ask_alice, qber_estimate)
            corrected = corrected.copy()
            corrected[len(corrected) // 3] ^= 1
            return corrected, stats

    monkeypatch.setattr(D, "LdpcBob", WrongLdpcBob)
    cfg, r = run15
    with pytest.raises(D.DistillAbort) as e:
        D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=7, method="ldpc")
    assert e.value.reason == "verification" and e.value.stage == "verify"


def _tamper(direction, index, mutate):
    def adversary(d, i, frame):
        return mutate(frame) if (d, i) == (direction, index) else [frame]
    return adversary


def _flip(frame):
    f = bytearray(frame)
    f[len(f) // 2] ^= 0x01
    return [bytes(f)]


@pytest.mark.parametrize("mode", D.AUTH_MODES)
@pytest.mark.parametrize("direction,index", [(ALICE_TO_BOB, 0), (ALICE_TO_BOB, 1), (BOB_TO_ALICE, 0),
                                             (BOB_TO_ALICE, 3), (ALICE_TO_BOB, 5)])
def test_tampered_message_aborts_without_key(run15, direction, index, mode):
    """Per message: the tag fails at once. Transcript: the flipped message is either undecodable
    (protocol) or acted on and then caught by the transcript tag before any key is released."""
    cfg, r = run15
    with pytest.raises(D.DistillAbort) as e:
        D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=7, adversary=_tamper(direction, index, _flip),
                  options=D.DistillOptions(authentication=mode))
    if mode == "per-message":
        assert e.value.reason == "authentication" and "bad-tag" in str(e.value)
    else:
        assert e.value.reason in ("authentication", "protocol", "session-mismatch", "estimation", "reconciliation",
                                  "verification")
        if e.value.reason == "authentication":
            assert "bad-tag" in str(e.value)


def test_replayed_reordered_dropped_messages_abort(small):
    cfg, r = small
    saved = {}

    def replay(d, i, frame):
        if d == ALICE_TO_BOB and i == 0:
            saved[0] = frame
        if d == ALICE_TO_BOB and i == 1:
            return [saved[0]]                            # frame 0 again instead of frame 1
        return [frame]

    def reorder(d, i, frame):
        if d == ALICE_TO_BOB and i == 1:
            saved[1] = frame
            return []
        if d == ALICE_TO_BOB and i == 2:
            return [frame, saved[1]]                    # 2 before 1
        return [frame]

    def drop_first(d, i, frame):
        return [] if (d, i) == (ALICE_TO_BOB, 0) else [frame]

    for mode in D.AUTH_MODES:
        for adversary, reason in ((replay, "replay"), (reorder, "out-of-order"), (drop_first, "out-of-order")):
            with pytest.raises(D.DistillAbort) as e:
                D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=7, adversary=adversary,
                          options=D.DistillOptions(authentication=mode))
            assert e.value.reason == "authentication" and reason in str(e.value)


def test_lost_message_aborts(run15):
    cfg, r = run15
    for index in (0, 4):                                    # Bob's estimate; a later reconciliation query
        with pytest.raises(D.DistillAbort) as e:
            D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=7,
                      adversary=_tamper(BOB_TO_ALICE, index, lambda f: []))
        assert e.value.reason == "protocol" and "lost or withheld" in str(e.value)


def test_mismatched_sessions_and_keys_abort(small):
    cfg, r = small
    a, b = r["alice_rows"], r["bob_rows"]
    with pytest.raises(D.DistillAbort) as e:                # different session ids at the two ends
        D.distill(a, b, r, cfg, seed=7, run_id=(b"run-one!", b"run-two!"))
    assert "wrong-session" in str(e.value)
    with pytest.raises(D.DistillAbort) as e:                # different pre-shared keys: tags fail
        _distill_two_psks(a, b, r, cfg, D.simulation_preshared_key(1), D.simulation_preshared_key(2))
    assert e.value.reason == "authentication"
    with pytest.raises(D.DistillAbort):                     # (transcript mode: at the latest at the first tag)
        _distill_two_psks(a, b, r, cfg, D.simulation_preshared_key(1), D.simulation_preshared_key(2),
                          mode="transcript")
    b2 = b.copy()
    b2[5, 1] ^= 2                                           # Bob's basis of one row differs
    with pytest.raises(D.DistillAbort) as e:
        D.distill(a, b2, r, cfg, seed=7)
    assert e.value.reason == "session-mismatch" and "sifted slots" in str(e.value)
    with pytest.raises(D.DistillAbort) as e:                # wrong lengths: Bob lacks the last rows
        D.distill(a, b[:-10], r, cfg, seed=7)
    assert e.value.reason == "session-mismatch"


def _distill_two_psks(a, b, r, cfg, psk_a, psk_b, mode="per-message"):
    """One block with each end built by hand (own pool from its own key); returns (alice, bob)."""
    from qkdlink.host.auth import KeyPool
    ch = D.Channel()
    common = dict(cfg=cfg, n_pulses=r["slots"], block=0, channel=ch,
                  options=D.DistillOptions(authentication=mode),
                  first_slot=0, block_bits=cfg.postprocessing.block_bits)
    sid = b"\x01" * 16
    alice = D.AliceEnd(a.astype(np.uint64), pool=KeyPool(psk_a), session_id=sid,
                       rng=np.random.default_rng(1), **common)
    bob = D.BobEnd(b.astype(np.uint64), pool=KeyPool(psk_b), session_id=sid, rng=np.random.default_rng(2),
                   **common)
    try:
        D.run_block(alice, bob)
    finally:
        _distill_two_psks.ends = (alice, bob)


def test_qber_above_threshold_aborts(run15):
    cfg, r = run15                                           # QBER ~1 %, above a 0.5 % threshold
    strict = dataclasses.replace(cfg, postprocessing=dataclasses.replace(cfg.postprocessing, qber_abort=0.005))
    with pytest.raises(D.DistillAbort) as e:
        D.distill(r["alice_rows"], r["bob_rows"], r, strict, seed=7)
    assert e.value.reason == "estimation" and "qber_abort" in str(e.value)


def test_no_key_at_small_size_is_a_clean_abort(small):
    cfg, r = small
    with pytest.raises(D.DistillAbort) as e:
        D.distill(r["alice_rows"], r["bob_rows"], r, cfg, seed=7)
    assert e.value.reason in ("estimation", "key-length")


def test_bad_input(small):
    cfg, r = small
    a, b = r["alice_rows"], r["bob_rows"]
    with pytest.raises(D.DistillInputError, match="empty block"):
        D.distill(a[:0], b[:0], r, cfg, seed=7)
    with pytest.raises(D.DistillInputError, match="shape"):
        D.distill(a[:, :1], b, r, cfg, seed=7)
    bad = a.copy()
    bad[3, 1] = 0x0C                                         # intensity 3 does not exist
    with pytest.raises(D.DistillInputError, match=r"alice_rows\[3\]"):
        D.distill(bad, b, r, cfg, seed=7)
    with pytest.raises(D.DistillInputError, match="beyond"):
        D.distill(a, b, 100, cfg, seed=7)
    with pytest.raises(D.DistillInputError, match="preshared_key"):
        D.distill(a, b, r, cfg)


def test_message_codec_round_trip_and_rejects_garbage():
    msg = {"type": "rec", "n": -5, "big": 1 << 80, "f": 0.25, "s": "x", "b": b"\x00\xff", "none": None,
           "ok": True, "arr": np.arange(6, dtype=np.int64).reshape(2, 3), "bits": np.array([1, 0], np.uint8),
           "list": [{"k": np.uint64(3)}, [1, 2]]}
    out = D.decode_message(D.encode_message(msg))
    assert out["big"] == 1 << 80 and out["n"] == -5 and out["list"][0]["k"] == 3
    assert np.array_equal(out["arr"], msg["arr"]) and out["arr"].dtype == np.int64
    data = D.encode_message(msg)
    for bad in (data[:-1], data + b"\0", b"XX" + data[2:]):
        with pytest.raises(D.MessageError):
            D.decode_message(bad)


# The wire bytes of one message of every kind, as the first (recursive) codec wrote them.
_GOLDEN_MESSAGE = (
    "51440164000000100000000474797065730000000372656300000005626c6f636b690000000000000003000000036e656769"
    "fffffffffffffffe000000036269674900000009c000000000000000000000000166663fe000000000000000000001737300"
    "000002c3a9000000016262000000020001000000046e6f6e654e000000017454000000026e6f460000000275386142010000"
    "000000000003010001000000017161710200000000000000010000000000000002000000000000000002000000000000000"
    "000000164616400000000000000f83f000000026e6246000000026e69490000000900ffffffffffffffff000000066e6573"
    "7465646c000000046c0000000064000000006c000000016900000000000000016400000001000000017861490200000000"
    "000000020000000000000000")


def _golden_message():
    return {"type": "rec", "block": 3, "neg": -2, "big": -(1 << 70), "f": 0.5, "s": "\u00e9", "b": b"\x00\x01",
            "none": None, "t": True, "no": False, "u8": np.array([1, 0, 1], np.uint8),
            "q": np.arange(3, dtype=np.int64).reshape(1, 3)[:, ::2], "d": np.array(1.5), "nb": np.bool_(False),
            "ni": np.uint64(2**64 - 1), "nested": [[], {}, (1,), {"x": np.zeros((2, 0), np.uint32)}]}


def _same(a, b):
    """Decoded value equals the sent one: tuples come back as lists, numpy scalars as Python
    numbers, arrays as writable arrays of the same dtype, shape and values."""
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and b.flags.writeable
                and a.tobytes() == b.tobytes())
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, (bool, np.bool_)) or a is None:
        return b is (None if a is None else bool(a))
    if isinstance(a, (int, np.integer)):
        return type(b) is int and b == int(a)
    if isinstance(a, (float, np.floating)):
        return type(b) is float and b == float(a)
    return type(b) is type(a) and b == a


def test_message_codec_wire_format_is_unchanged():
    msg = _golden_message()
    data = D.encode_message(msg)
    assert data.hex() == _GOLDEN_MESSAGE
    assert _same(msg, D.decode_message(data))
    assert _same(msg, D.decode_message(bytearray(data)))


def test_message_codec_random_messages_and_corruptions():
    """Seeded random messages round-trip; every truncation, byte change or extension decodes to
    some value or raises MessageError, never anything else."""
    rng = np.random.default_rng(31)
    dtypes = [np.uint8, np.bool_, np.int32, np.uint32, np.int64, np.uint64, np.float64]

    def value(depth):
        k = int(rng.integers(12 if depth < 4 else 8))
        if k == 0:
            return [None, True, False, np.bool_(True)][int(rng.integers(4))]
        if k == 1:
            return int(rng.integers(-2**63, 2**63 - 1)) * int(rng.choice([1, 1, 1 << 40]))
        if k == 2:
            return float(rng.normal() * 1e6)
        if k == 3:
            return "".join(chr(int(c)) for c in rng.integers(32, 2000, int(rng.integers(6))))
        if k == 4:
            return rng.bytes(int(rng.integers(20)))
        if k in (5, 6, 7):
            shape = tuple(int(x) for x in rng.integers(0, 5, int(rng.integers(4))))
            a = rng.integers(0, 2 if k == 5 else 1000, shape).astype(dtypes[int(rng.integers(len(dtypes)))])
            return a.T if a.ndim == 2 and k == 6 else (a[::2] if a.ndim and k == 7 else a)
        if k in (8, 9):
            return [value(depth + 1) for _ in range(int(rng.integers(4)))]
        return {f"k{i}": value(depth + 1) for i in range(int(rng.integers(4)))}

    for _ in range(400):
        msg = {"type": "x", "v": value(0)}
        data = D.encode_message(msg)
        assert _same(msg, D.decode_message(data))
        for _ in range(4):
            bad = bytearray(data)
            op = int(rng.integers(3))
            if op == 0:
                del bad[int(rng.integers(3, len(bad))):]
            elif op == 1:
                bad[int(rng.integers(3, len(bad)))] = int(rng.integers(256))
            else:
                bad += rng.bytes(int(rng.integers(1, 4)))
            try:
                D.decode_message(bytes(bad))
            except D.MessageError:
                pass
    with pytest.raises(D.MessageError, match="truncated"):
        D.decode_message(D.encode_message({"a": np.arange(5)})[:-3])
    with pytest.raises(D.MessageError, match="dtype"):
        D.encode_message({"a": np.arange(3, dtype=">i8")})        # big-endian arrays are not sent
    with pytest.raises(D.MessageError, match="dict key"):
        D.encode_message({1: 2})
    deep = []
    for _ in range(20):
        deep = [deep]
    with pytest.raises(D.MessageError, match="nested"):
        D.encode_message(deep)


def test_choose_method():
    assert D.choose_method("cascade", 0.02, 10_000, 88) == "cascade"
    assert D.choose_method("auto", 0.02, 500_000, 88) == "ldpc"
    assert D.choose_method("auto", 0.02, 50_000_000, 88) == "cascade"
    assert D.choose_method("auto", 0.02, 500_000, 88, per_message_tags=False) == "cascade"


@pytest.fixture(scope="module")
def gateware_run():
    """A real full-link co-simulation (gateware + channel + hardware sifting)."""
    from qkdlink.cosim.fulllink import run_full_link
    cfg = link_config()
    return cfg, run_full_link(cfg, slots=1_000_000, seed=5)


@pytest.mark.verilator
def test_gateware_output_distills_to_a_clean_abort(gateware_run):
    """Real gateware output: every message up to the estimate runs on both ends' rows; at the
    1e6 slots affordable here (~15 s) the finite-key bound leaves no key (about 3e7 slots are
    needed, see the fast_link tests), so the block aborts cleanly and both ends stop."""
    cfg, r = gateware_run
    a = np.array(r["alice_key"], dtype=np.uint64).reshape(-1, 2)
    b = np.array(r["bob_key"], dtype=np.uint64).reshape(-1, 2)
    assert r["key_slots_identical"] and len(a) > 2000
    counts = estimation.counts_from_sifted(a, b, r["slots"])
    with pytest.raises(D.DistillAbort) as e:
        D.distill(a, b, r, cfg, seed=1)
    assert e.value.reason == "estimation" and e.value.stage == "estimate"
    psk = D.simulation_preshared_key(1)
    with pytest.raises(D.DistillAbort):
        _distill_two_psks(a, b, r, cfg, psk, psk)
    alice, bob = _distill_two_psks.ends
    # Bob's X errors, counted against Alice's authenticated test bits, are the true ones
    assert tuple(bob.m_test) == counts.m_test
    assert bob.key_bits is None and alice.key_bits is None     # wiped


def _cli(argv):
    p = argparse.ArgumentParser(prog="qkdlink")
    distill_cli.add_parser(p.add_subparsers())
    args = p.parse_args(argv)
    return args.func(args)


def test_cli_writes_keys_atomically_and_prints_no_key(run15, tmp_path, capsys):
    cfg, r = run15
    fast_link.write_sim_output(tmp_path / "run.json", r, cfg)
    assert _cli(["distill", str(tmp_path / "run.json"), "--json", str(tmp_path / "ledger.json")]) == 0
    out = capsys.readouterr()
    assert "FOR SIMULATION ONLY" in out.err and "IDENTICAL" in out.out and "final key bits" in out.out
    ka, kb = (tmp_path / "run.alice.key").read_bytes(), (tmp_path / "run.bob.key").read_bytes()
    assert ka == kb and len(ka) > 100
    assert stat.S_IMODE(os.stat(tmp_path / "run.alice.key").st_mode) == 0o600
    assert ka.hex()[:32] not in out.out + out.err
    doc = json.loads((tmp_path / "ledger.json").read_text())
    assert -(-doc["ledger"]["totals"]["final_key_bits"] // 8) == len(ka)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temp files left


def test_cli_abort_writes_nothing_and_bad_input_exits_2(small, tmp_path, capsys):
    cfg, r = small
    fast_link.write_sim_output(tmp_path / "small.json", r, cfg)
    assert _cli(["distill", str(tmp_path / "small.json"), "--method", "cascade"]) == 1
    assert "ABORTED, no key written" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.key"))
    assert _cli(["distill", str(tmp_path / "missing.json")]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    assert _cli(["distill", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: not JSON" in capsys.readouterr().err
    np.save(tmp_path / "small.bob_key.npy", r["bob_rows"][:, :1])
    assert _cli(["distill", str(tmp_path / "small.json")]) == 2
    assert "small.bob_key.npy: rows must have shape (n, 2)" in capsys.readouterr().err
    np.save(tmp_path / "small.bob_key.npy", r["bob_rows"][1:])
    assert _cli(["distill", str(tmp_path / "small.json")]) == 2
    assert "sifted rows" in capsys.readouterr().err
    report = json.loads((tmp_path / "small.json").read_text())
    report["slots"] = 1000
    (tmp_path / "small.json").write_text(json.dumps(report))
    np.save(tmp_path / "small.bob_key.npy", r["bob_rows"])
    assert _cli(["distill", str(tmp_path / "small.json")]) == 2
    assert "beyond the report's 1000 slots" in capsys.readouterr().err


def test_transcript_tag_catches_a_wrong_key_before_any_output(run15):
    """Transcript mode: nothing is tagged until the key-releasing messages, so two ends with
    different pre-shared keys run the whole block — and the first transcript tag stops it."""
    cfg, r = run15
    with pytest.raises(D.DistillAbort) as e:
        _distill_two_psks(r["alice_rows"], r["bob_rows"], r, cfg, D.simulation_preshared_key(1),
                          D.simulation_preshared_key(2), mode="transcript")
    assert e.value.reason == "authentication" and "bad-tag" in str(e.value)
    alice, bob = _distill_two_psks.ends
    assert alice.final is None and bob.final is None      # no key survives the abort
