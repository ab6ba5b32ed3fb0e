"""Detector and sync input words for receiver co-simulations, from Alice's emission.

A simple, seeded, ideal-ish channel used to exercise Bob's gateware (the physical channel
model is ``cosim/channel``'s job): every slot of Alice's emission arrives ``delay_samples``
later; its sync bit becomes a pulse on the sync input; with probability ``eta`` a pulse is
detected in the basis chosen at Bob's beam splitter (passive, 50/50), on the detector of
Alice's bit if the bases match and a random one otherwise; each detector also clicks with
probability ``dark`` per slot, and a click is followed within ``burst_samples`` by a second
edge with probability ``burst`` (afterpulse-like, to exercise the dead time). Clicks land at
a random sample inside the slot (``jitter``), so every sample position and both gate edges
occur. All pulses are ``width_samples`` long; pulses that overlap merge, as on a wire.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hdl.sync import sync_bits_model

__all__ = ["ChannelStimulus", "make_stimulus", "make_stimulus_with_jump", "pack_words"]


@dataclass
class ChannelStimulus:
    """Sample words for Bob, and the truth behind them."""
    det: np.ndarray          # (n, 4) uint64, S-bit words per clock (H, V, D, A)
    sync: np.ndarray         # (n,) uint64
    alice_first_slot: int    # Alice's slot index of the first slot sent
    click_slots: np.ndarray  # Alice slot offsets (from alice_first_slot) of signal clicks


def pack_words(samples: np.ndarray, S: int) -> np.ndarray:
    """(..., n*S) bool samples -> (..., n) uint64 words, bit i = sample i of the clock."""
    shape = samples.shape[:-1] + (-1, S)
    weights = (np.uint64(1) << np.arange(S, dtype=np.uint64))
    return (samples.reshape(shape).astype(np.uint64) * weights).sum(axis=-1).astype(np.uint64)


def make_stimulus(S: int, P: int, n_clocks: int, codes: np.ndarray, *, alice_first_slot: int,
                  frame_log2: int, delay_samples: int = 0, width_samples: int = 1, eta: float = 0.01,
                  dark: float = 1e-4, burst: float = 0.05, burst_samples: int = 40, jitter: bool = True,
                  seed: int = 1) -> ChannelStimulus:
    """Bob's inputs for ``n_clocks`` clocks; ``codes`` are Alice's 4-bit symbols per slot (flat).

    Alice's slot ``alice_first_slot + j`` starts at Bob's sample ``j*K + delay_samples``.
    """
    K = S // P
    rng = np.random.default_rng(seed)
    n_samples = n_clocks * S
    n_slots = max(0, min(len(codes), (n_samples - delay_samples) // K))
    j = np.arange(n_slots)
    start = j * K + delay_samples

    sync_bits = sync_bits_model(np.arange(alice_first_slot, alice_first_slot + n_slots, dtype=np.uint64)
                                & np.uint64((1 << 48) - 1), frame_log2)
    lines = np.zeros((5, n_samples + 4 * S + 2 * burst_samples + 2 * width_samples), bool)

    def pulse(channel: np.ndarray, at: np.ndarray):
        for w in range(width_samples):
            lines[channel, at + w] = True

    pulse(np.full(int(sync_bits.sum()), 4), start[sync_bits])

    codes = np.asarray(codes[:n_slots], dtype=np.uint8)
    blank = (codes >> 2) == 3
    hit = (rng.random(n_slots) < eta) & ~blank
    bob_basis = rng.integers(0, 2, n_slots)
    alice_bit, alice_basis = codes & 1, (codes >> 1) & 1
    bit = np.where(bob_basis == alice_basis, alice_bit, rng.integers(0, 2, n_slots))
    detector = 2 * bob_basis + bit
    offset = rng.integers(0, K, n_slots) if jitter else np.zeros(n_slots, int)
    pulse(detector[hit], start[hit] + offset[hit])

    dark_hits = rng.random((4, n_slots)) < dark
    for c in range(4):
        sel = dark_hits[c]
        pulse(np.full(int(sel.sum()), c), start[sel] + (rng.integers(0, K, int(sel.sum())) if jitter else 0))
    # second edges after some clicks (afterpulse-like bursts inside the dead time)
    rising = lines[:4, 1:] & ~lines[:4, :-1]
    first_ch, first = np.nonzero(rising)
    first = first + 1
    again = rng.random(first.size) < burst
    gap = rng.integers(width_samples + 1, burst_samples + 1, int(again.sum()))
    pulse(first_ch[again], first[again] + gap)

    det = pack_words(lines[:4, :n_samples], S).T.copy()
    sync = pack_words(lines[4, :n_samples], S)
    return ChannelStimulus(det=det, sync=sync, alice_first_slot=alice_first_slot,
                           click_slots=j[hit])


def make_stimulus_with_jump(S: int, P: int, n_clocks: int, codes: np.ndarray, *, alice_first_slot: int,
                            jump_clock: int, jump_slots: int, **kwargs) -> ChannelStimulus:
    """As :func:`make_stimulus`, but at clock ``jump_clock`` Alice's numbering jumps by
    ``jump_slots`` (a fibre length change seen by Bob as a shifted slot grid).

    ``codes`` must cover ``n_clocks * P + jump_slots`` slots from ``alice_first_slot``.
    """
    K = S // P
    first = make_stimulus(S, P, jump_clock, codes, alice_first_slot=alice_first_slot, **kwargs)
    offset = jump_clock * S // K + jump_slots
    kwargs = dict(kwargs, seed=kwargs.get("seed", 1) + 1)
    second = make_stimulus(S, P, n_clocks - jump_clock, codes[offset:],
                           alice_first_slot=alice_first_slot + offset, **kwargs)
    return ChannelStimulus(det=np.concatenate([first.det, second.det]),
                           sync=np.concatenate([first.sync, second.sync]),
                           alice_first_slot=alice_first_slot,
                           click_slots=np.concatenate([first.click_slots, second.click_slots + offset]))
