"""Bit-exact reference model of the Alice top, composed from the block models.

Given the build parameters, the register settings and a list of bursts (running clocks per
burst, each ended by STOP_AT_SLOT), it predicts what the gateware's SNAPSHOT registers hold
after each burst: slot counter, per-class counters, health-test fires and both CRC-32
digests. Everything is vectorised numpy; 10^6 slots take about a second.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, asdict

import numpy as np

from ..hdl.entropy import entropy_model
from ..hdl.symbols import select_symbols_model, laser_fire_model, INTENSITY_BLANK, INTENSITY_VACUUM
from ..hdl.sync import sync_bits_model
from ..hdl.pulses import pulse_shaper_model
from .alice import AliceParams, symbol_digest_bits, pin_digest_bits
from .regmap import ALICE_REGISTERS

__all__ = ["AliceSettings", "AliceEmission", "alice_model", "SNAPSHOT_FIELDS"]

# Snapshot values, in the order of their registers, that the model predicts.
SNAPSHOT_FIELDS = ("SNAP_SLOT", "SNAP_SENT_SIGNAL_Z", "SNAP_SENT_SIGNAL_X", "SNAP_SENT_DECOY_Z",
                   "SNAP_SENT_DECOY_X", "SNAP_SENT_VACUUM_Z", "SNAP_SENT_VACUUM_X", "SNAP_BLANK",
                   "SNAP_UNDERRUN", "SNAP_CHOICE_LOST", "SNAP_RCT_FAILS", "SNAP_APT_FAILS", "SNAP_DIGEST_SYMBOLS",
                   "SNAP_DIGEST_PINS")


def _reset(name: str) -> int:
    return ALICE_REGISTERS[name].reset


@dataclass(frozen=True)
class AliceSettings:
    """Run-time register settings of a transmitter run (register units)."""
    seed: int = 1
    pz_q15: int = _reset("PZ_Q15")
    t_signal_q15: int = _reset("T_SIGNAL_Q15")
    t_decoy_q15: int = _reset("T_DECOY_Q15")
    pulse_delay_samples: int = 0
    pulse_width_samples: int = 1
    rct_cutoff: int = _reset("HEALTH_RCT_CUTOFF")
    apt_cutoff: int = _reset("HEALTH_APT_CUTOFF")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, cfg) -> "AliceSettings":
        """From a :class:`qkdlink.host.config.LinkConfig`."""
        from ..hdl.symbols import quantise_probability, intensity_thresholds
        from ..hdl.health import rct_cutoff, apt_cutoff
        s, g = cfg.source, cfg.gateware
        t_sig, t_dec = intensity_thresholds(s.p_signal, s.p_decoy, s.p_vacuum)
        return cls(seed=g.prng_seed, pz_q15=quantise_probability(s.p_z_basis), t_signal_q15=t_sig,
                   t_decoy_q15=t_dec, pulse_delay_samples=g.pulse_delay_samples,
                   pulse_width_samples=g.pulse_width_samples,
                   rct_cutoff=rct_cutoff(g.health_min_entropy_bits, g.health_alpha_log2),
                   apt_cutoff=apt_cutoff(g.health_min_entropy_bits, g.health_alpha_log2))


@dataclass
class AliceEmission:
    """What the model says a run emitted: per-slot codes and the snapshot after each burst."""
    codes: np.ndarray          # (clocks, P) uint8 4-bit symbols
    sync: np.ndarray           # (clocks, P) bool sync bits
    snapshots: list            # one dict per burst: SNAPSHOT_FIELDS -> int


def _le_bytes(words: np.ndarray, nbytes: int) -> bytes:
    """Little-endian bytes of each uint64 word, ``nbytes`` per word, concatenated."""
    return np.ascontiguousarray(words.astype("<u8")).view(np.uint8).reshape(-1, 8)[:, :nbytes].tobytes()


def alice_model(params: AliceParams, settings: AliceSettings, bursts: list[int]) -> AliceEmission:
    """Predict the snapshots after each burst of ``bursts[k]`` running clocks (PRNG source)."""
    S, P = params.samples_per_clock, params.slots_per_clock
    n = int(sum(bursts))
    ent = entropy_model(P, settings.seed, n, rct_cutoff=settings.rct_cutoff, apt_cutoff=settings.apt_cutoff)
    codes = select_symbols_model(ent["words"], ent["ok"], settings.pz_q15, settings.t_signal_q15,
                                 settings.t_decoy_q15).astype(np.uint8)
    sync = sync_bits_model(np.arange(n * P, dtype=np.uint64), params.frame_log2).reshape(n, P)

    lanes = np.arange(P, dtype=np.uint64)
    sym_words = ((codes.astype(np.uint64) << (4 * lanes)).sum(axis=1)
                 | (sync.astype(np.uint64) << (4 * P + lanes)).sum(axis=1))
    intensity = codes >> 2
    im = np.where(intensity == INTENSITY_BLANK, INTENSITY_VACUUM, intensity).astype(np.uint64)
    im_word = (im << (2 * lanes)).sum(axis=1)
    fires = laser_fire_model(codes)                                   # (n, 4, P)
    sym_bytes = symbol_digest_bits(P) // 8
    pin_bytes = pin_digest_bits(S, P) // 8

    blank = intensity == INTENSITY_BLANK
    basis = (codes >> 1) & 1
    per_clock = {"SNAP_BLANK": blank.sum(axis=1)}
    for i, iname in enumerate(("SIGNAL", "DECOY", "VACUUM")):
        for b, bname in enumerate("ZX"):
            per_clock[f"SNAP_SENT_{iname}_{bname}"] = ((intensity == i) & (basis == b)).sum(axis=1)
    per_clock["SNAP_UNDERRUN"] = ent["underrun"].astype(np.int64) * P
    per_clock["SNAP_CHOICE_LOST"] = np.zeros(n, np.int64)  # no choice queries during the bursts
    per_clock["SNAP_RCT_FAILS"] = ent["rct_fire"].sum(axis=1)
    per_clock["SNAP_APT_FAILS"] = ent["apt_fire"].sum(axis=1)

    snapshots = []
    d_sym = d_pin = 0
    start = 0
    totals = {k: 0 for k in per_clock}
    for length in bursts:
        stop = start + int(length)
        sl = slice(start, stop)
        if params.has_digests:
            d_sym = zlib.crc32(_le_bytes(sym_words[sl], sym_bytes), d_sym)
        out = pulse_shaper_model(S, P, fires[sl], np.ones(stop - start, bool),
                                 settings.pulse_delay_samples, settings.pulse_width_samples)
        sync_out = pulse_shaper_model(S, P, sync[sl][:, None, :], np.ones(stop - start, bool),
                                      settings.pulse_delay_samples, settings.pulse_width_samples)
        pin_words = (out[:, 0].astype(np.uint64) | (out[:, 1].astype(np.uint64) << S)
                     | (out[:, 2].astype(np.uint64) << 2 * S) | (out[:, 3].astype(np.uint64) << 3 * S)
                     | (sync_out[:, 0].astype(np.uint64) << 4 * S) | (im_word[sl] << 5 * S))
        if params.has_digests:
            d_pin = zlib.crc32(_le_bytes(pin_words, pin_bytes), d_pin)
        for k, v in per_clock.items():
            totals[k] += int(v[sl].sum())
        snap = {"SNAP_SLOT": stop * P, **totals, "SNAP_DIGEST_SYMBOLS": d_sym, "SNAP_DIGEST_PINS": d_pin}
        snapshots.append({k: snap[k] for k in SNAPSHOT_FIELDS})
        start = stop
    return AliceEmission(codes=codes, sync=sync, snapshots=snapshots)
