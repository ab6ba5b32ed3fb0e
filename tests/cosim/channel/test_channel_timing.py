"""Timing through the channel: Bob's sample clock (ppm offset, fixed delay), jitter,
``render()`` of detector and sync words, and Bob's bit-exact model fed by the channel."""
import numpy as np
import pytest
from scipy import stats

from qkdlink.cosim.bob_stimulus import pack_words
from qkdlink.cosim.channel import Channel, Detections, random_codes
from qkdlink.gateware.bob import BobParams
from qkdlink.gateware.bob_model import BobSettings, bob_model
from qkdlink.hdl.pulses import pulse_shaper_model
from qkdlink.hdl.record_fifo import unpack_records
from qkdlink.hdl.sync import sync_bits_model

FIRST = (1 << 40) + 12_345


@pytest.mark.parametrize("ppm", [10.0, -10.0])
def test_clock_offset_drifts_sample_indices_by_the_expected_amount(link, ppm):
    """10 ppm over 10^7 slots of one sample each: the pulse of slot n lands in Bob's sample
    floor((n + d + 1/2)(1 + ppm 1e-6)), i.e. 100 samples late (early) at the end."""
    cfg = link(channel=dict(length_km=0.0), detectors=dict(timing_jitter_ps=0.0, dead_time_ns=0.0),
               gateware=dict(samples_per_clock=4, slots_per_clock=4, pulse_delay_samples=0))
    n = 10_000_000
    codes = random_codes(n, cfg.source, np.random.default_rng(1))
    ch = Channel(cfg, seed=2, clock_offset_ppm=ppm)
    det = ch.propagate(codes, FIRST)
    rel = det.slot - FIRST
    expected = np.floor((rel + 0.5) * (1 + ppm * 1e-6)).astype(np.int64)
    assert np.array_equal(det.sample, expected)
    drift = det.sample - rel
    late = rel > n - 200_000
    assert np.all(np.abs(drift[late] - ppm * 1e-6 * n) <= 3)
    assert abs(drift[-1]) == pytest.approx(abs(ppm) * 1e-6 * n, abs=3)


def test_fixed_delay_and_pulse_delay_shift_every_click(link):
    cfg = link(channel=dict(length_km=0.0), detectors=dict(timing_jitter_ps=0.0),
               gateware=dict(samples_per_clock=8, slots_per_clock=2, pulse_delay_samples=3))
    ch = Channel(cfg, seed=3, extra_delay_ps=9_700.0)        # 8 x 156.25 MHz: 800 ps samples
    det = ch.propagate(random_codes(200_000, cfg.source, np.random.default_rng(4)), 77)
    assert len(det) > 1000
    # pulse at the centre of sample 3 of its slot, plus 12.125 samples: sample 3 + 12
    assert np.array_equal(det.sample, (det.slot - 77) * 4 + 3 + 12)


def test_jitter_is_gaussian_with_the_configured_rms(link):
    cfg = link(channel=dict(length_km=0.0), detectors=dict(timing_jitter_ps=120.0))
    ch = Channel(cfg, seed=5)
    det = ch.propagate(random_codes(1_000_000, cfg.source, np.random.default_rng(6)), 0)
    dt = det.time_ps - ch.pulse_time_ps(det.slot)
    n = dt.size
    assert abs(dt.mean()) < 3 * 120.0 / np.sqrt(n)
    assert abs(dt.std() / 120.0 - 1) < 3 / np.sqrt(2 * n)
    assert stats.kstest(dt / 120.0, "norm").pvalue > 1e-3


def _detections(samples, channels):
    n = len(samples)
    z = np.zeros(n)
    return Detections(sample=np.asarray(samples, np.int64), channel=np.asarray(channels, np.uint8),
                      slot=np.zeros(n, np.int64), photons=np.zeros(n, np.int32), cause=np.ones(n, np.uint8),
                      eve=np.zeros(n, np.uint8), time_ps=z, angle_rad=z, first_slot=0, n_slots=0)


def test_render_places_pulses_bit0_earliest_and_merges_overlaps(link):
    cfg = link(gateware=dict(samples_per_clock=4, slots_per_clock=2))
    ch = Channel(cfg, seed=1)
    ch.propagate(np.zeros(0, np.uint8), 0)                      # sets the epoch
    det = _detections([1, 9, 10, 15, 30, 5], [0, 2, 2, 3, 1, 1])
    words, sync = ch.render(det, np.zeros(0, bool), 6, pulse_width_samples=3)
    expected = np.zeros((6, 4), np.uint64)
    expected[0, 0] = 0b1110                        # samples 1..3, bit 0 = earliest sample
    expected[2, 2], expected[3, 2] = 0b1110, 0b0001  # 9..11 and 10..12 merge into 9..12
    expected[3, 3], expected[4, 3] = 0b1000, 0b0011  # 15..17 crosses a clock edge
    expected[1, 1] = 0b1110                        # 5..7; 30..32 is after the 6 clocks
    assert np.array_equal(words, expected)
    assert sync.shape == (6,) and not sync.any()
    # a window starting later keeps the tail of a pulse that began before it
    words2, _ = ch.render(det, np.zeros(0, bool), 2, first_clock=4, pulse_width_samples=3)
    assert np.array_equal(words2, expected[4:6])
    # the default width is the gateware's pulse width (1 sample here)
    words3, _ = ch.render(det, np.zeros(0, bool), 6)
    assert int(words3[2, 2]) == 0b0110 and int(words3[0, 0]) == 0b0010


def test_render_matches_pack_words_for_random_clicks(link):
    cfg = link(gateware=dict(samples_per_clock=8, slots_per_clock=4))
    ch = Channel(cfg, seed=1)
    ch.propagate(np.zeros(0, np.uint8), 0)
    rng = np.random.default_rng(7)
    samples, channels = rng.integers(0, 8000, 3000), rng.integers(0, 4, 3000)
    words, _ = ch.render(_detections(samples, channels), np.zeros(0, bool), 1000, pulse_width_samples=2)
    lines = np.zeros((4, 8000 + 2), bool)
    for s, c in zip(samples, channels):
        lines[c, s:s + 2] = True
    assert np.array_equal(words, pack_words(lines[:, :8000], 8).T)


@pytest.mark.parametrize("S, P, delay, width", [(4, 4, 0, 1), (8, 2, 5, 3), (4, 1, 4, 2), (2, 2, 1, 1)])
def test_sync_words_equal_alices_pins_when_the_clocks_agree(link, S, P, delay, width):
    """With no clock offset and no extra delay, the sync channel delivers Alice's sync pin
    words (pulse_shaper_model) unchanged: the fibre delay only moves the time origin."""
    cfg = link(gateware=dict(samples_per_clock=S, slots_per_clock=P, pulse_delay_samples=delay,
                             pulse_width_samples=width))
    clocks = 4096
    slots = np.arange(FIRST, FIRST + clocks * P, dtype=np.uint64)
    bits = sync_bits_model(slots, 8)
    ch = Channel(cfg, seed=1)
    det = ch.propagate(np.full(clocks * P, 0b1100, np.uint8), FIRST)       # blank slots: dark counts only
    _, sync = ch.render(det, bits, clocks)
    pins = pulse_shaper_model(S, P, bits.reshape(clocks, 1, P), np.ones(clocks, bool), delay, width)[:, 0]
    assert np.array_equal(sync, pins)


def test_bob_model_recovers_every_click_through_the_rendered_words(link):
    """Channel -> render -> Bob's bit-exact model: after sync lock, Bob's records are exactly
    the clicked slots, with the clicking detector's basis and bit when one detector clicked."""
    S, P, frame_log2 = 4, 2, 8
    cfg = link(channel=dict(length_km=5.0), detectors=dict(dark_count_per_gate=1e-4, dead_time_ns=50.0),
               gateware=dict(samples_per_clock=S, slots_per_clock=P, pulse_delay_samples=0, pulse_width_samples=1))
    clocks = 100_000
    n = clocks * P
    codes = random_codes(n, cfg.source, np.random.default_rng(8))
    ch = Channel(cfg, seed=9)
    det = ch.propagate(codes, FIRST)
    bits = sync_bits_model(np.arange(FIRST, FIRST + n, dtype=np.uint64), frame_log2)
    words, sync = ch.render(det, bits, clocks)
    run = bob_model(BobParams(S, P, frame_log2=frame_log2), BobSettings(seed=3, gate_width_samples=S // P),
                    words, sync)
    rec = unpack_records(run.records)
    lock_slot = FIRST + int(np.argmax(run.locked)) * P
    truth = det.slot[det.slot >= lock_slot + 2 * P]
    got = rec["slot"].astype(np.int64)
    got = got[got >= lock_slot + 2 * P]
    assert got.size > 2000
    assert np.array_equal(np.unique(truth), got)
    one = np.unique(truth, return_counts=True)
    single = set(one[0][one[1] == 1].tolist())
    by_slot = {int(s): int(c) for s, c in zip(det.slot, det.channel)}
    for s, b, bit in zip(rec["slot"].astype(np.int64), rec["basis"], rec["bit"]):
        if int(s) in single:
            c = by_slot[int(s)]
            assert (int(b), int(bit)) == (c >> 1, c & 1)
    assert run.snapshot["SNAP_SUPPRESSED"] == 0 and run.snapshot["SNAP_OUT_OF_GATE"] == 0
