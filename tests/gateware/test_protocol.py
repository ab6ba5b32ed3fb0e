"""Host-link message set: framing, receiver rules, typed messages, device model."""
import binascii
import random

import pytest

from qkdlink.gateware import protocol as P
from qkdlink.gateware.protocol import (
    ESC, FLAG, MAX_PAYLOAD, DeviceModel, Frame, FrameDecoder, MsgType, NakCode, ProtocolError, Status,
    crc16, encode_frame, parse_response,
)
from qkdlink.gateware.regmap import ALICE_REGISTERS, ID_ALICE

R = ALICE_REGISTERS
ZERO_COUNTERS = dict.fromkeys(P.DECODER_COUNTER_NAMES, 0)


def reference_decode(data: bytes, max_payload=MAX_PAYLOAD):
    """Straight from docs/hostlink.md, byte by byte, no shortcuts: (frames, counters)."""
    frames, counters = [], dict(ZERO_COUNTERS)
    started, raw = False, None
    for b in data:
        if b != FLAG:
            if started:
                raw.append(b)
            continue
        if started and raw:
            content, esc = bytearray(), False
            for x in raw:
                if esc:
                    content.append(x ^ 0x20)
                    esc = False
                elif x == ESC:
                    esc = True
                else:
                    content.append(x)
            if len(content) > 2 + max_payload + 2:
                counters["rx_oversize"] += 1
            elif esc:
                counters["rx_framing_errors"] += 1
            elif len(content) < 4:
                counters["rx_truncated"] += 1
            elif binascii.crc_hqx(bytes(content[:-2]), 0xFFFF) != int.from_bytes(content[-2:], "big"):
                counters["rx_crc_errors"] += 1
            else:
                counters["rx_frames"] += 1
                frames.append(Frame(content[0], content[1], bytes(content[2:-2])))
        started, raw = True, bytearray()
    return frames, counters


def random_payload(rng, n):
    return bytes(rng.choice((FLAG, ESC, 0x5E, 0x5D, 0x20, rng.getrandbits(8))) for _ in range(n))


def feed_chunked(dec, data, rng):
    out, pos = [], 0
    while pos < len(data):
        n = rng.choice((1, 1, 2, 3, 7, 64, 1000))
        out += dec.feed(data[pos:pos + n])
        pos += n
    return out


def test_crc16_catalogue_check_value():
    assert crc16(b"123456789") == 0x29B1          # CRC-16/IBM-3740 check value


def test_encode_frame_layout():
    f = encode_frame(0x02, 0x7E, b"\x7d\x00")
    content = bytes((0x02, 0x7E, 0x7D, 0x00))
    crc = crc16(content)
    assert f[0] == FLAG and f[-1] == FLAG and FLAG not in f[1:-1]
    assert f[1:-1] == P.stuff(content + crc.to_bytes(2, "big"))
    assert f[1:5] == b"\x02\x7d\x5e\x7d"


@pytest.mark.parametrize("args,match", [
    ((1, 0, bytes(256)), r"payload length 256 outside 0\.\.255"),
    ((1, 256, b""), r"seq 256 outside 0\.\.255"),
    ((1, -1, b""), r"seq -1 outside"),
    ((300, 0, b""), r"msg_type 300 outside"),
])
def test_encode_frame_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        encode_frame(*args)


def test_round_trip_random_payloads_and_chunking():
    rng = random.Random(1)
    sent, stream = [], bytearray()
    for i in range(300):
        n = rng.choice((0, 1, 2, 16, 255, rng.randrange(256)))
        fr = Frame(rng.getrandbits(8), rng.getrandbits(8), random_payload(rng, n))
        sent.append(fr)
        enc = encode_frame(fr.type, fr.seq, fr.payload)
        stream += enc[1:] if stream and rng.random() < 0.3 else enc     # sometimes share flags
    stream = bytes(stream)
    whole = FrameDecoder()
    assert whole.feed(stream) == sent
    assert whole.counters == {**ZERO_COUNTERS, "rx_frames": 300}
    chunked = FrameDecoder()
    assert feed_chunked(chunked, stream, rng) == sent and chunked.counters == whole.counters
    byte_wise = FrameDecoder()
    assert [f for b in stream for f in byte_wise.feed(bytes((b,)))] == sent


def counters(**kw):
    return {**ZERO_COUNTERS, **kw}


GOOD = encode_frame(0x02, 0x10, b"\x01\x02\x03")


@pytest.mark.parametrize("bad,expected", [
    (b"\x7e\x01\x02\x03\x04\x7e", counters(rx_crc_errors=1)),
    (encode_frame(1, 2, b"ab")[:-3] + b"\x00\x7e", counters(rx_crc_errors=1)),
    (b"\x7e\x01\x7e", counters(rx_truncated=1)),
    (b"\x7e\x01\x02\x03\x7e", counters(rx_truncated=1)),
    (b"\x7e\x7d\x5e\x7e", counters(rx_truncated=1)),
    (b"\x7e\x7d\x7d\x7e", counters(rx_truncated=1)),                    # 7D 7D = one byte 0x5D
    (b"\x7e\x01\x02\x03\x04\x7d\x7e", counters(rx_framing_errors=1)),
    (b"\x7e\x7d\x7e", counters(rx_framing_errors=1)),
    (b"\x7e\x7e\x7e\x7e", counters()),                                  # empty frames
    (b"garbage before any flag", counters()),                           # hunting
    (b"\x7e" + b"\x00" * 260 + b"\x7e", counters(rx_oversize=1)),
    (b"\x7e" + b"\x7d\x5e" * 260 + b"\x7e", counters(rx_oversize=1)),
    (b"\x7e" + b"\x00" * 300 + b"\x7d\x7e", counters(rx_oversize=1)),   # oversize wins over framing
])
def test_receiver_rules(bad, expected):
    rng = random.Random(len(bad))
    for chunker in (lambda d, s: d.feed(s), lambda d, s: feed_chunked(d, s, rng)):
        dec = FrameDecoder()
        frames = chunker(dec, bad + GOOD)
        assert frames == [Frame(0x02, 0x10, b"\x01\x02\x03")], "the valid frame after the error is lost"
        assert dec.counters == {**expected, "rx_frames": 1}
        assert reference_decode(bad + GOOD) == (frames, dec.counters)


def test_oversize_limit_follows_max_payload():
    ok = encode_frame(1, 0, bytes(16))
    dec = FrameDecoder(max_payload=16)
    assert dec.feed(ok + encode_frame(1, 0, bytes(17)) + ok) == [Frame(1, 0, bytes(16))] * 2
    assert dec.counters == counters(rx_frames=2, rx_oversize=1)
    big = FrameDecoder()
    assert big.feed(encode_frame(1, 0, bytes(255))) == [Frame(1, 0, bytes(255))]
    with pytest.raises(ValueError, match="max_payload"):
        FrameDecoder(max_payload=300)


@pytest.mark.parametrize("seed", range(4))
def test_garbage_fuzz_against_reference(seed):
    """Random valid frames, corrupted frames and garbage; no valid frame after garbage is lost."""
    rng = random.Random(seed)
    max_payload = rng.choice((16, 255))
    stream, valid = bytearray(), []
    for _ in range(300):
        k = rng.random()
        if k < 0.5:
            fr = Frame(rng.getrandbits(8), rng.getrandbits(8), random_payload(rng, rng.randrange(max_payload + 1)))
            stream += encode_frame(fr.type, fr.seq, fr.payload)
            valid.append((len(stream), fr))
        elif k < 0.8:
            f = bytearray(encode_frame(1, 2, random_payload(rng, rng.randrange(40))))
            for _ in range(rng.randint(1, 3)):
                f[rng.randrange(len(f))] = rng.choice((FLAG, ESC, rng.getrandbits(8)))
            stream += f
        else:
            stream += bytes(rng.getrandbits(8) for _ in range(rng.randrange(50)))
    stream = bytes(stream)
    dec = FrameDecoder(max_payload)
    frames = feed_chunked(dec, stream, rng)
    ref_frames, ref_counters = reference_decode(stream, max_payload)
    assert frames == ref_frames and dec.counters == ref_counters
    got = iter(frames)
    for _, fr in valid:                      # every intact frame appears, in order
        assert any(g == fr for g in got)
    assert sum(ref_counters.values()) > len(valid)


def test_iter_feed_counters_are_current_at_each_frame():
    dec = FrameDecoder()
    data = b"\x7e\x00\x7e" + GOOD + b"\x7e\x01\x02\x7e"
    seen = [dict(dec.counters) for _ in dec.iter_feed(data)]
    assert seen == [counters(rx_truncated=1, rx_frames=1)]
    assert dec.counters == counters(rx_truncated=2, rx_frames=1)


def test_request_builders():
    assert P.reg_write(0x1234, 0xDEADBEEF) == b"\x34\x12\xef\xbe\xad\xde"
    assert P.reg_read(0x0060, 9) == b"\x60\x00\x09"
    assert P.choice_query(0x0102030405FF, 200) == b"\xff\x05\x04\x03\x02\x01\xc8"
    for f, p in P.REQUEST_PAYLOAD_LENGTH.items():
        assert len({MsgType.REG_WRITE: P.reg_write(0, 0), MsgType.REG_READ: P.reg_read(0),
                     MsgType.CHOICE_QUERY: P.choice_query(0, 1)}[f]) == p


@pytest.mark.parametrize("call,match", [
    (lambda: P.reg_write(0x10000, 0), r"addr 65536 outside 0\.\.65535"),
    (lambda: P.reg_write(0, 1 << 32), r"value 4294967296 outside 0\.\.4294967295"),
    (lambda: P.reg_read(0, 0), r"count 0 outside 1\.\.32"),
    (lambda: P.reg_read(0, 33), r"count 33 outside 1\.\.32"),
    (lambda: P.choice_query(1 << 48, 1), r"first_slot .* outside"),
    (lambda: P.choice_query(0, 201), r"count 201 outside 1\.\.200"),
])
def test_request_builders_validate(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("msg", [
    P.WriteAck(7, 0x0010, Status.OK),
    P.WriteAck(255, 0xFFFF, Status.BAD_ADDRESS),
    P.ReadData(1, 0x0060, 3, Status.OK, (1, 0x7E7E7E7E, 0xFFFFFFFF)),
    P.ReadData(1, 0x0060, 40, Status.BAD_VALUE),
    P.ReadData(1, 0x0060, 2, Status.BAD_ADDRESS),
    P.ChoiceData(9, (1 << 48) - 1, 4, (0x00, 0x1F, 0x2A, 0x03)),
    P.Nak(3, NakCode.UNKNOWN_TYPE, 0x55),
    P.Nak(3, NakCode.BAD_LENGTH, 0x01),
])
def test_response_round_trip(msg):
    dec = FrameDecoder()
    (frame,) = dec.feed(encode_frame(msg.MSG_TYPE, 0x42, msg.payload()))
    assert parse_response(frame) == msg


def test_choice_data_fields():
    cd = P.ChoiceData(0, 5, 3, (0x03, 0x1F, 0x20))
    assert cd.symbols == (3, 15, 0) and cd.statuses == (0, 1, 2)


@pytest.mark.parametrize("frame,match", [
    (Frame(0x99, 0, b""), "unknown message type 0x99"),
    (Frame(0x01, 0, b"\x00" * 6), "is a request, not a response"),
    (Frame(0x81, 0, b"\x00" * 5), "WRITE_ACK payload is 5 bytes, expected 4"),
    (Frame(0x81, 0, b"\x00\x00\x00\x07"), "WRITE_ACK status 7 is not one of"),
    (Frame(0x82, 0, b"\x00\x00\x00\x02\x00" + bytes(4)), r"READ_DATA \(status OK, count 2\) payload is 9 bytes, expected 13"),
    (Frame(0x82, 0, b"\x00\x00\x00\x02\x01" + bytes(8)), r"READ_DATA \(status BAD_ADDRESS\) payload is 13 bytes"),
    (Frame(0x82, 0, b"\x00"), "READ_DATA payload is 1 bytes, expected at least 5"),
    (Frame(0x83, 0, bytes(7) + b"\x02" + b"\x00"), r"CHOICE_DATA \(count 2\) payload is 9 bytes, expected 10"),
    (Frame(0x7F, 0, b"\x00\x09\x01"), "NAK code 9"),
    (Frame(0x7F, 0, b"\x00\x01"), "NAK payload is 2 bytes, expected 3"),
])
def test_parse_response_errors(frame, match):
    with pytest.raises(ProtocolError, match=match):
        parse_response(frame)
    assert issubclass(ProtocolError, ValueError)


# --- device model ------------------------------------------------------------------------

def model_session(model, requests, seq0=0):
    stream = b"".join(encode_frame(t, (seq0 + i) & 0xFF, p) for i, (t, p) in enumerate(requests))
    frames = FrameDecoder().feed(model.feed(stream))
    return [parse_response(f) for f in frames], frames


def test_device_model_registers():
    status = {"v": 0b101}
    model = DeviceModel(R, ro={"ID": ID_ALICE, "VERSION": 1, "BUILD": 0x1234, "STATUS": lambda: status["v"]})
    msgs, frames = model_session(model, [
        (MsgType.REG_WRITE, P.reg_write(R["SCRATCH"].addr, 0x7E7D7E7D)),
        (MsgType.REG_WRITE, P.reg_write(R["CTRL"].addr, 0xFFFFFFFF)),
        (MsgType.REG_WRITE, P.reg_write(R["CMD"].addr, 0xF3)),
        (MsgType.REG_WRITE, P.reg_write(R["STATUS"].addr, 0)),
        (MsgType.REG_READ, P.reg_read(R["ID"].addr, 4)),
        (MsgType.REG_READ, P.reg_read(R["CTRL"].addr, 3)),
        (MsgType.REG_READ, P.reg_read(R["CTRL"].addr, 4)),      # 0x13 unmapped
        (MsgType.REG_READ, b"\x00\x00\x00"),                      # count 0
        (MsgType.REG_READ, P.reg_read(R["RX_FRAMES"].addr, 9)),
    ])
    assert [f.seq for f in frames] == list(range(9))
    assert [m.status for m in msgs[:4]] == [Status.OK] * 3 + [Status.BAD_ADDRESS]
    assert msgs[4].values == (ID_ALICE, 1, 0x1234, 0x7E7D7E7D)
    assert msgs[5].values == (3, 0, 0b101)
    assert msgs[6] == P.ReadData(6, R["CTRL"].addr, 4, Status.BAD_ADDRESS)
    assert msgs[7] == P.ReadData(7, 0, 0, Status.BAD_VALUE)
    assert msgs[8].values == (9, 0, 0, 0, 0, 0, 0, 0, 8)
    assert model.strobes == [("CMD", 0x3)]
    assert model.rw["CTRL"] == 3 and model.rw["PZ_Q15"] == 16384


def test_device_model_naks_gaps_and_choice():
    table = {5: (3, 0), 6: (0, 1)}
    model = DeviceModel(R, ro={}, choice=lambda s: table.get(s, (0, 2)))
    msgs, _ = model_session(model, [
        (0x44, b""),
        (MsgType.REG_READ, b"\x00\x00"),
        (MsgType.CHOICE_QUERY, P.choice_query(5, 3)),
        (MsgType.CHOICE_QUERY, bytes(6) + b"\x00"),            # count 0 -> NAK BAD_LENGTH
    ], seq0=0xFE)
    assert msgs[0] == P.Nak(0xFE, NakCode.UNKNOWN_TYPE, 0x44)
    assert msgs[1] == P.Nak(0xFF, NakCode.BAD_LENGTH, MsgType.REG_READ)
    assert msgs[2] == P.ChoiceData(0, 5, 3, (0x03, 0x10, 0x20))
    assert msgs[3] == P.Nak(1, NakCode.BAD_LENGTH, MsgType.CHOICE_QUERY)
    assert model.counters["rx_frames"] == 2 and model.counters["rx_bad_length"] == 1
    assert model.counters["rx_seq_gaps"] == 0
    model.feed(encode_frame(MsgType.REG_READ, 7, P.reg_read(0x60)))   # expected 2
    assert model.counters["rx_seq_gaps"] == 1
    no_choice = DeviceModel(R, ro={})
    msgs, _ = model_session(no_choice, [(MsgType.CHOICE_QUERY, P.choice_query(5, 3))])
    assert msgs == [P.Nak(0, NakCode.UNKNOWN_TYPE, MsgType.CHOICE_QUERY)]


def test_device_model_counters_wrap():
    model = DeviceModel(R, ro={})
    model.counters["tx_frames"] = 0xFFFF_FFFF
    model.feed(encode_frame(MsgType.REG_READ, 0, P.reg_read(R["TX_FRAMES"].addr)))
    assert model.counters["tx_frames"] == 0


def test_device_model_missing_ro_value():
    model = DeviceModel(R, ro={})
    with pytest.raises(KeyError, match="no value for read-only register ID"):
        model.feed(encode_frame(MsgType.REG_READ, 0, P.reg_read(0)))


# --- sifting and detection messages --------------------------------------------------------

TOP = 1 << 48


def test_sift_constants_match_the_gateware_blocks():
    from qkdlink.hdl import choice_memory, record_fifo, symbols
    assert P.RX_MAX_PAYLOAD == 225 == 1 + 7 * 32
    assert (P.RECORD_BASIS_BIT, P.RECORD_BIT_BIT) == (record_fifo.BASIS_BIT, record_fifo.BIT_BIT)
    assert P.RECORD_BYTES * 8 == record_fifo.RECORD_BITS
    assert (P.CHOICE_OK, P.CHOICE_LOST, P.CHOICE_FUTURE) == (
        choice_memory.STATUS_OK, choice_memory.STATUS_LOST, choice_memory.STATUS_FUTURE)
    assert P.INTENSITY_BLANK == symbols.INTENSITY_BLANK
    assert 2 + 7 * 32 <= MAX_PAYLOAD and 1 + 8 * P.MAX_DETECTION_RECORDS <= MAX_PAYLOAD


def test_request_length_rule():
    ok = [n for n in range(0, 256) if P.request_length_ok(MsgType.SIFT_QUERY, n)]
    assert ok == [1 + 7 * k for k in range(1, 33)]
    assert ok == [n for n in range(0, 256) if P.request_length_ok(MsgType.SIFT_APPLY, n)]
    assert P.request_length_ok(MsgType.REG_WRITE, 6) and not P.request_length_ok(MsgType.REG_WRITE, 7)
    assert not P.request_length_ok(0x55, 0)


def test_sift_builders():
    assert P.sift_query([(0x0102030405FF, 1)]) == b"\x01\xff\x05\x04\x03\x02\x01\x01"
    q = P.sift_query([(i, i & 1) for i in range(32)])
    assert len(q) == P.RX_MAX_PAYLOAD and q[0] == 32
    assert P.sift_apply([(TOP - 1, 0x1F), (0, 0)]) == b"\x02" + b"\xff" * 6 + b"\x1f" + bytes(7)
    assert P.sift_query(iter([[7, 0]])) == P.sift_query([(7, 0)])     # any iterable of pairs


@pytest.mark.parametrize("call,match", [
    (lambda: P.sift_query([]), r"sift_query entry count 0 outside 1\.\.32"),
    (lambda: P.sift_query([(0, 0)] * 33), r"entry count 33 outside 1\.\.32"),
    (lambda: P.sift_query([(TOP, 0)]), r"entry 0 slot .* outside"),
    (lambda: P.sift_query([(1, 0), (2, 2)]), r"sift_query entry 1 basis 2 outside 0\.\.1"),
    (lambda: P.sift_query([(1, 0, 0)]), r"entry 0 must be a \(slot, basis\) pair"),
    (lambda: P.sift_apply([(1, 0x20)]), r"sift_apply entry 0 answer 32 outside 0\.\.31"),
    (lambda: P.sift_apply([(-1, 0)]), r"slot -1 outside"),
    (lambda: P.sift_apply([]), r"sift_apply entry count 0"),
    (lambda: P.answer_byte(2, 0, 0), r"keep 2 outside"),
    (lambda: P.answer_byte(1, 4, 0), r"intensity 4 outside"),
    (lambda: P.key_byte(0, 2, 0), r"basis 2 outside"),
])
def test_sift_builders_validate(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_answer_and_key_bytes():
    for keep in (0, 1):
        for inten in range(4):
            for st in range(4):
                b = P.answer_byte(keep, inten, st)
                assert b == keep | inten << 1 | st << 3 and P.unpack_answer_byte(b) == (keep, inten, st)
                assert P.unpack_answer_byte(b | 0xE0) == (keep, inten, st)     # bits 5..7 ignored
    for bit in (0, 1):
        for basis in (0, 1):
            for inten in range(4):
                k = P.key_byte(bit, basis, inten)
                assert k == bit | basis << 1 | inten << 2 and P.unpack_key_byte(k) == (bit, basis, inten)


def test_slot_older():
    assert P.slot_older(5, 6) and not P.slot_older(6, 5) and not P.slot_older(5, 5)
    assert P.slot_older(TOP - 1, 0) and not P.slot_older(0, TOP - 1)      # wraps
    assert P.slot_older(0, (1 << 47) - 1) and P.slot_older(0, 1 << 47)       # half-way is older
    assert not P.slot_older(0, (1 << 47) + 1)


@pytest.mark.parametrize("msg", [
    P.SiftAnswer(4, ((TOP - 1, 0x1F), (0x7E7D, 0x7E))),
    P.SiftAnswer(4, tuple((i, i & 0x1F) for i in range(32))),
    P.SiftedKey(0, ()),
    P.SiftedKey(255, ((1, 0x0F), (2, 0))),
    P.Detections((0, (1 << 64) - 1, 0x7E7E7E7E7E7E7E7E)),
    P.Detections(tuple(range(30))),
])
def test_sift_response_round_trip(msg):
    (frame,) = FrameDecoder().feed(encode_frame(msg.MSG_TYPE, 0x42, msg.payload()))
    assert parse_response(frame) == msg


def test_detections_has_no_req_seq():
    assert P.Detections((1,)).req_seq is None


@pytest.mark.parametrize("frame,match", [
    (Frame(0x84, 0, b"\x00\x00"), r"SIFT_ANSWER count 0 outside 1\.\.32"),
    (Frame(0x84, 0, b"\x00"), "SIFT_ANSWER payload is 1 bytes, expected at least 2"),
    (Frame(0x84, 0, b"\x00\x02" + bytes(7)), r"SIFT_ANSWER \(count 2\) payload is 9 bytes, expected 16"),
    (Frame(0x85, 0, b"\x00\x21" + bytes(231)), r"SIFTED_KEY count 33 outside 0\.\.32"),
    (Frame(0x85, 0, b"\x00\x00\x00"), r"SIFTED_KEY \(count 0\) payload is 3 bytes, expected 2"),
    (Frame(0x90, 0, b""), "DETECTIONS payload is 0 bytes"),
    (Frame(0x90, 0, b"\x00"), r"DETECTIONS count 0 outside 1\.\.30"),
    (Frame(0x90, 0, b"\x1f" + bytes(248)), r"DETECTIONS count 31 outside"),
    (Frame(0x90, 0, b"\x01" + bytes(7)), r"DETECTIONS \(count 1\) payload is 8 bytes, expected 9"),
    (Frame(0x04, 0, b""), "SIFT_QUERY.* is a request"),
    (Frame(0x05, 0, b""), "SIFT_APPLY.* is a request"),
])
def test_sift_parse_errors(frame, match):
    with pytest.raises(ProtocolError, match=match):
        parse_response(frame)


def symbol(bit, basis, inten):
    return bit | basis << 1 | inten << 2


def test_alice_sift_model():
    table = {1: (symbol(1, 0, 0), 0), 2: (symbol(0, 1, 1), 0), 3: (symbol(0, 0, 3), 0),
             4: (0, 1), 5: (symbol(1, 1, 2), 0)}
    lookup = lambda s: table.get(s, (0, 2))
    answers, kept, counts = P.alice_sift_model(lookup, [(1, 0), (2, 0), (3, 0), (4, 1), (5, 1), (9, 0)])
    assert answers == [(1, P.answer_byte(1, 0, 0)), (2, P.answer_byte(0, 1, 0)), (3, P.answer_byte(0, 3, 0)),
                       (4, P.answer_byte(0, 0, 1)), (5, P.answer_byte(1, 2, 0)), (9, P.answer_byte(0, 0, 2))]
    assert kept == [(1, symbol(1, 0, 0)), (5, symbol(1, 1, 2))]
    assert counts["detected"] == [1, 0, 0, 1, 0, 1]        # classes 2*intensity + Alice's basis
    assert counts["sifted"] == [1, 0, 0, 0, 0, 1] and counts["lost"] == 2


def test_bob_apply_model():
    pending = [(TOP - 2, 0, 1), (TOP - 1, 1, 0), (0, 1, 1), (4, 0, 0), (9, 1, 1)]
    answers = [(TOP - 1, P.answer_byte(1, 1, 0)),      # drops TOP-2, consumes: kept
               (2, P.answer_byte(1, 0, 0)),            # drops 0; 4 is newer: unmatched
               (4, P.answer_byte(1, 3, 0)),            # consumed, blank: not detected
               (4, P.answer_byte(1, 0, 0))]            # already consumed: unmatched
    kept, rest, counts = P.bob_apply_model(pending, answers)
    assert kept == [(TOP - 1, P.key_byte(0, 1, 1))]
    assert rest == [(9, 1, 1)]
    assert counts["detected"] == [0, 0, 0, 1, 0, 0] and counts["sifted"] == [0, 0, 0, 1, 0, 0]
    assert (counts["unanswered"], counts["unmatched"]) == (2, 2)
    assert P.bob_apply_model([], [(1, 1)])[2]["unmatched"] == 1


@pytest.mark.parametrize("seed", range(3))
def test_alice_and_bob_keys_pair_up(seed):
    """End to end through both models: Bob's detections -> Alice's answers -> Bob's merge; both
    keys list the same slots with the same basis and intensity, and the same bit whenever
    Bob's detection bit equals Alice's."""
    rng = random.Random(seed)
    table = {}
    for s in range(TOP - 500, TOP + 500):
        s %= TOP
        table[s] = (symbol(rng.getrandbits(1), rng.getrandbits(1), rng.randrange(4)), rng.choice((0, 0, 0, 1)))
    lookup = lambda s: (table[s][0] if table[s][1] == 0 else 0, table[s][1])
    det = sorted(rng.sample(range(1000), 300))
    pending = []
    for i in det:
        s = (TOP - 500 + i) % TOP
        pending.append((s, rng.getrandbits(1), lookup(s)[0] & 1 if rng.random() < 0.9 else rng.getrandbits(1)))
    a_keys, b_keys = [], []
    for i in range(0, len(pending), 32):
        chunk = pending[i:i + 32]
        answers, a_kept, _ = P.alice_sift_model(lookup, [(s, b) for s, b, _ in chunk])
        answers = [a for a in answers if rng.random() < 0.95]            # lost answers
        b_kept, pending_rest, _ = P.bob_apply_model(pending[i:], answers)
        a_keys += [e for e in a_kept if e[0] in {s for s, _ in answers}]
        b_keys += b_kept
    assert [s for s, _ in a_keys] == [s for s, _ in b_keys] and a_keys
    for (s, ka), (_, kb) in zip(a_keys, b_keys):
        assert P.unpack_key_byte(ka)[1:] == P.unpack_key_byte(kb)[1:]


def test_device_model_alice_sifting():
    from qkdlink.gateware.regmap import ALICE_REGISTERS
    table = {10: (symbol(1, 0, 1), 0), 11: (symbol(0, 1, 0), 0), 12: (0, 1)}
    model = DeviceModel(ALICE_REGISTERS, ro={}, choice=lambda s: table.get(s, (0, 2)), sift_query=True)
    q = P.sift_query([(10, 0), (11, 0), (12, 1), (13, 1)])
    msgs, frames = model_session(model, [
        (MsgType.SIFT_QUERY, q),
        (MsgType.SIFT_QUERY, b"\x03" + q[1:]),                         # count != entries: NAK
        (MsgType.SIFT_QUERY, q[:-1] + b"\x02"),                        # basis 2: NAK
        (MsgType.SIFT_QUERY, q[:-1]),                                  # bad length
        (MsgType.SIFT_QUERY, b"\x00"),                                 # bad length (k = 0)
        (MsgType.SIFT_APPLY, P.sift_apply([(10, 1)])),                 # not Bob
        (MsgType.REG_READ, P.reg_read(0xE0, 9)),
    ])
    assert msgs[0] == P.SiftAnswer(0, ((10, P.answer_byte(1, 1, 0)), (11, P.answer_byte(0, 0, 0)),
                                       (12, P.answer_byte(0, 0, 1)), (13, P.answer_byte(0, 0, 2))))
    assert msgs[1] == P.SiftedKey(0, ((10, symbol(1, 0, 1)),))
    assert [f.seq for f in frames] == list(range(8))
    assert msgs[2:6] == [P.Nak(i, NakCode.BAD_LENGTH, MsgType.SIFT_QUERY) for i in range(1, 5)]
    assert msgs[6] == P.Nak(5, NakCode.UNKNOWN_TYPE, MsgType.SIFT_APPLY)
    assert msgs[7].values == (4, 0, 0, 0, 0, 1, 2, 0, 7)
    assert model.sift_counts == {"detected": [0, 1, 1, 0, 0, 0], "sifted": [0, 0, 1, 0, 0, 0], "lost": 2,
                                 "unanswered": 0, "unmatched": 0}
    # without sift_query (but with a choice memory) SIFT_QUERY is unknown
    plain = DeviceModel(ALICE_REGISTERS, ro={}, choice=lambda s: (0, 2))
    assert model_session(plain, [(MsgType.SIFT_QUERY, q)])[0] == [P.Nak(0, NakCode.UNKNOWN_TYPE, 0x04)]


def test_device_model_bob_records_and_apply():
    from qkdlink.gateware.regmap import BOB_REGISTERS
    from qkdlink.hdl.record_fifo import pack_record
    B = BOB_REGISTERS
    model = DeviceModel(B, ro={}, sift_apply=True, pending_depth=40)
    recs = [pack_record(100 + i, i & 1, 1, 3, 0, 0) for i in range(70)]
    model.add_records(recs)
    assert model.feed(b"") == b"" and len(model.waiting) == 70        # CTRL.RECORDS is 0
    out = model.feed(encode_frame(MsgType.REG_WRITE, 0, P.reg_write(B["CTRL"].addr, 0b010)))
    msgs = [parse_response(f) for f in FrameDecoder().feed(out)]
    assert isinstance(msgs[0], P.WriteAck)
    assert [len(x.records) for x in msgs[1:]] == [30, 10]             # pending queue full at 40
    assert msgs[1].records[0] == recs[0] & ~(1 << 49)                 # bit hidden
    assert model.pending[0] == (100, 0, 1) and len(model.waiting) == 30
    answers = [(100 + i, P.answer_byte(1, 2, 0)) for i in range(0, 20, 2)]
    out = model.feed(encode_frame(MsgType.SIFT_APPLY, 1, P.sift_apply(answers)))
    msgs = [parse_response(f) for f in FrameDecoder().feed(out)]
    assert msgs[0] == P.SiftedKey(1, tuple((100 + i, P.key_byte(1, 0, 2)) for i in range(0, 20, 2)))
    assert [len(x.records) for x in msgs[1:]] == [19]                 # room freed: 10 + 9 dropped
    assert model.sift_counts["unanswered"] == 9 and model.sift_counts["sifted"][4] == 10
    model.feed(encode_frame(MsgType.REG_WRITE, 2, P.reg_write(B["CTRL"].addr, 0b110)))
    assert model.waiting == recs[59:]                                 # queue full again
    out = model.feed(encode_frame(MsgType.SIFT_APPLY, 3, P.sift_apply([(1000, 0)])))   # drops all
    assert parse_response(FrameDecoder().feed(out)[1]).records == tuple(recs[59:])   # bits shown
    assert model.sift_counts["unanswered"] == 9 + 40 and model.sift_counts["unmatched"] == 1
    assert model.pending == [(159 + i, (59 + i) & 1, 1) for i in range(11)] and model.waiting == []
    msgs, _ = model_session(model, [(MsgType.SIFT_APPLY, b"\x02" + P.sift_apply([(1, 0)])[1:]),
                                    (MsgType.SIFT_APPLY, bytes(9)),
                                    (MsgType.SIFT_QUERY, P.sift_query([(1, 0)])),
                                    (MsgType.CHOICE_QUERY, P.choice_query(1, 1))], seq0=4)
    assert msgs == [P.Nak(4, NakCode.BAD_LENGTH, 0x05), P.Nak(5, NakCode.BAD_LENGTH, 0x05),
                    P.Nak(6, NakCode.UNKNOWN_TYPE, 0x04), P.Nak(7, NakCode.UNKNOWN_TYPE, 0x03)]
    assert (model.counters["rx_frames"], model.counters["rx_bad_length"]) == (5, 1)


def test_device_model_bob_without_ctrl_fields():
    model = DeviceModel(R, ro={}, sift_apply=True, pending_depth=4)   # Alice's map: no RECORDS field
    model.add_records([1, 2, 3, 1 << 49 | 4, 5])
    msgs = [parse_response(f) for f in FrameDecoder().feed(model.feed(b""))]
    assert msgs == [P.Detections((1, 2, 3, 4))] and model.waiting == [5]
    model.records_enable, model.record_bits = 0, 1
    model.feed(encode_frame(MsgType.SIFT_APPLY, 0, P.sift_apply([(4, 0)])))
    assert model.waiting == [5]
    model.records_enable = 1
    assert [parse_response(f) for f in FrameDecoder().feed(model.feed(b""))] == [P.Detections((5,))]


@pytest.mark.parametrize("kwargs,match", [
    ({"sift_query": True}, "sift_query needs a choice memory"),
    ({"sift_apply": True, "choice": {}}, "does not combine"),
    ({"sift_apply": True, "pending_depth": 0}, "pending_depth 0 outside"),
])
def test_device_model_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeviceModel(R, ro={}, **kwargs)
    with pytest.raises(ValueError, match="no sift_apply"):
        DeviceModel(R, ro={}).add_records([1])
