"""The physical channel between Alice's optical outputs and Bob's detector inputs.

:class:`Channel` composes the pieces: :mod:`.source` (photon numbers), :mod:`.eve`
(optional attack), :mod:`.fibre` or :mod:`.freespace` (loss, delay, polarisation),
:mod:`.detectors` (routing, dark counts, dead time, afterpulses, jitter) and :mod:`.clock`
(Bob's samples). ``propagate`` turns Alice's symbols into clicks with their truth;
``render`` turns clicks and Alice's sync bits into Bob's S-sample input words.

Timing. Slot ``n`` of Alice starts at ``(n - epoch) * K * Ts`` on the common timeline (see
:mod:`.clock`); its optical pulse is short (gain-switched laser) and leaves at the centre of
the first driven sample, ``(pulse_delay_samples + 1/2) * Ts`` after the slot start. It
arrives after the path delay; the timeline's origin absorbs the path delay of the epoch slot,
so on a fibre (constant delay) Alice's sample ``k`` maps onto Bob's sample ``k`` (plus the
clock offset and ``extra_delay_ps``), and on a satellite pass only the change of the light
time since the epoch appears. Jitter is added per click. The sync channel is a strong
classical signal on its own wavelength: Alice's sync waveform (``pulse_width_samples`` wide per
1-bit) delayed by the same path, sampled by level at Bob's sample centres, never lost.

Slots must be propagated in increasing order (gaps allowed: skipped slots are not simulated,
pending afterpulses inside a gap are dropped); the detectors' dead time, pending afterpulses
and the polarisation drift carry over between calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._checks import check_choice, check_int, check_range
from .clock import SampleClock
from .detectors import (CAUSE_AFTERPULSE, CAUSE_DARK, CAUSE_PHOTON, DetectorBank, Detectors,
                        bernoulli_positions)
from .eve import BeamSplitting, InterceptResend, PhotonNumberSplitting
from .fibre import Fibre, PolarisationDrift
from .freespace import SatellitePass
from .source import Source, decode_codes

__all__ = ["Channel", "Detections", "SLOT_INDEX_LIMIT"]

SLOT_INDEX_LIMIT = 1 << 48          # Alice's slot counter is 48 bits


@dataclass
class Detections:
    """Clicks of one ``propagate`` call, sorted by Bob sample then channel, with their truth."""
    sample: np.ndarray       # int64: Bob's sample index
    channel: np.ndarray      # uint8: detector 0=H, 1=V, 2=D, 3=A
    slot: np.ndarray         # int64: Alice's slot index (the gate the click belongs to)
    photons: np.ndarray      # int32: photons Alice emitted in that slot
    cause: np.ndarray        # uint8: CAUSE_PHOTON | CAUSE_DARK | CAUSE_AFTERPULSE bits
    eve: np.ndarray          # uint8: Eve's action on that slot (eve.EVE_*)
    time_ps: np.ndarray      # float64: arrival time on the common timeline (jitter included)
    angle_rad: np.ndarray    # float64: polarisation rotation seen by the photon(s); NaN if none
    first_slot: int = 0
    n_slots: int = 0
    suppressed: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))  # lost to dead time

    def __len__(self) -> int:
        return int(self.sample.size)

    @property
    def is_photon(self) -> np.ndarray:
        return (self.cause & CAUSE_PHOTON) != 0

    @property
    def is_dark(self) -> np.ndarray:
        return (self.cause & CAUSE_DARK) != 0

    @property
    def is_afterpulse(self) -> np.ndarray:
        return (self.cause & CAUSE_AFTERPULSE) != 0

    @property
    def is_signal(self) -> np.ndarray:
        """Alias of :attr:`is_photon`: a click with at least one photon behind it."""
        return self.is_photon


class Channel:
    """Alice -> (Eve) -> fibre or satellite downlink -> Bob's detectors -> Bob's samples.

    ``cfg`` is a :class:`qkdlink.host.config.LinkConfig` (its ``source``, ``channel``,
    ``detectors`` and ``gateware`` sections are used; the values are checked again here).
    ``S``, ``P``, ``clock_mhz``, ``pulse_delay_samples`` and ``pulse_width_samples`` default to
    ``cfg.gateware``. ``downlink`` replaces the fibre's loss and delay by a satellite pass
    (``pass_time_s`` = time from culmination at the epoch slot); the polarisation model is the
    same. ``epoch_slot`` defaults to the first slot propagated.
    """

    def __init__(self, cfg, *, S: int | None = None, P: int | None = None, clock_mhz: float | None = None,
                 seed: int | None = None, rng: np.random.Generator | None = None, eve=None,
                 downlink: SatellitePass | None = None, pass_time_s: float = 0.0,
                 clock_offset_ppm: float = 0.0, extra_delay_ps: float = 0.0, epoch_slot: int | None = None,
                 p_z_bob: float = 0.5, pulse_delay_samples: int | None = None,
                 pulse_width_samples: int | None = None):
        g = cfg.gateware
        self.S = check_choice("S (samples_per_clock)", g.samples_per_clock if S is None else S, (1, 2, 4, 8))
        self.P = check_choice("P (slots_per_clock)", g.slots_per_clock if P is None else P, (1, 2, 4))
        if self.S % self.P:
            raise ValueError(f"P (slots_per_clock) = {self.P}: must divide S (samples_per_clock) = {self.S}")
        self.K = self.S // self.P
        self.clock_mhz = check_range("clock_mhz", g.clock_mhz if clock_mhz is None else clock_mhz,
                                     1.0, 1000.0, "MHz")
        self.pulse_delay_samples = check_int("pulse_delay_samples", g.pulse_delay_samples
                                             if pulse_delay_samples is None else pulse_delay_samples, 0, self.S)
        self.pulse_width_samples = check_int("pulse_width_samples", g.pulse_width_samples
                                             if pulse_width_samples is None else pulse_width_samples, 1, self.K)
        self.extra_delay_ps = check_range("extra_delay_ps", extra_delay_ps, -1e9, 1e9, "ps")
        if eve is not None and not isinstance(eve, (InterceptResend, PhotonNumberSplitting, BeamSplitting)):
            raise ValueError(f"eve = {eve!r}: must be None, InterceptResend, PhotonNumberSplitting or BeamSplitting")
        self.eve = eve
        self.rng = rng if rng is not None else np.random.default_rng(seed)

        self.source = Source.from_config(cfg.source)
        self.fibre = Fibre.from_config(cfg.channel)
        self.downlink = downlink
        if downlink is not None and not isinstance(downlink, SatellitePass):
            raise ValueError(f"downlink = {downlink!r}: must be None or a SatellitePass")
        self.pass_time_s = check_range("pass_time_s", pass_time_s, -1e5, 1e5, "s")
        self.detectors = Detectors.from_config(cfg.detectors, p_z_bob=p_z_bob)
        self.drift = PolarisationDrift(cfg.channel.misalignment, cfg.channel.polarisation_drift_rad_per_sqrt_s,
                                       self.rng)
        self.sample_period_ps = 1e6 / (self.clock_mhz * self.S)
        self.slot_period_ps = self.K * self.sample_period_ps
        self.clock = SampleClock(self.sample_period_ps, clock_offset_ppm, 0.0)
        self.bank = DetectorBank(self.detectors, self.slot_period_ps, self.rng)
        self.epoch_slot = None if epoch_slot is None else check_int("epoch_slot", epoch_slot, 0, SLOT_INDEX_LIMIT - 1)
        self._next_slot = 0
        self._eta_max = float(self.detectors.efficiencies.max())

    # -- geometry of time ---------------------------------------------------------------------
    @property
    def transmittance(self) -> float:
        """Channel transmittance at the epoch (fibre: constant)."""
        if self.downlink is None:
            return self.fibre.transmittance
        return float(self.downlink.transmittance(self.pass_time_s))

    @property
    def path_delay_ps(self) -> float:
        """One-way delay of the path at the epoch (fibre or light time to the satellite)."""
        if self.downlink is None:
            return self.fibre.delay_ps
        return float(self.downlink.delay_ps(self.pass_time_s))

    def _seconds(self, slots) -> np.ndarray:
        """Time (s) since the epoch slot, or pass time (s from culmination) on a downlink."""
        t = (np.asarray(slots, dtype=np.int64) - self.epoch_slot).astype(float) * self.slot_period_ps * 1e-12
        return t + (self.pass_time_s if self.downlink is not None else 0.0)

    def _delay_change_ps(self, slots) -> np.ndarray | float:
        if self.downlink is None:
            return 0.0
        return self.downlink.delay_ps(self._seconds(slots)) - self.path_delay_ps

    def _slot_start_ps(self, slots) -> np.ndarray:
        rel = (np.asarray(slots, dtype=np.int64) - self.epoch_slot).astype(float)
        return rel * self.slot_period_ps + self._delay_change_ps(slots) + self.extra_delay_ps

    def pulse_time_ps(self, slots) -> np.ndarray:
        """Nominal (jitter-free) arrival time of the pulse of each slot on the common timeline."""
        return self._slot_start_ps(slots) + (self.pulse_delay_samples + 0.5) * self.sample_period_ps

    def _transmittance_at(self, slots) -> np.ndarray | float:
        if self.downlink is None:
            return self.fibre.transmittance
        return self.downlink.transmittance(self._seconds(slots))

    # -- propagation --------------------------------------------------------------------------
    def propagate(self, codes, first_slot: int) -> Detections:
        """Alice's symbols for slots ``first_slot, first_slot + 1, ...`` -> Bob's clicks."""
        bit, basis, intensity = decode_codes(codes)
        n = bit.size
        first_slot = check_int("first_slot", first_slot, 0, SLOT_INDEX_LIMIT - 1)
        if first_slot + n > SLOT_INDEX_LIMIT:
            raise ValueError(f"first_slot + len(codes) = {first_slot + n}: must be <= 2^48")
        if self.epoch_slot is None:
            self.epoch_slot = first_slot
        if first_slot < self._next_slot:
            raise ValueError(f"first_slot = {first_slot}: must be >= {self._next_slot} (slots are propagated "
                             "in increasing order)")
        if first_slot < self.epoch_slot:
            raise ValueError(f"first_slot = {first_slot}: must be >= epoch_slot = {self.epoch_slot}")
        self._next_slot = first_slot + n
        rng = self.rng
        state = (2 * basis + bit).astype(np.uint8)

        _, photons = self.source.emit(intensity, rng)
        idx = np.flatnonzero(photons)                      # pulses with at least one photon
        eta_ch = self._transmittance_at(first_slot + idx)
        eve_action = np.zeros(n, np.uint8)
        if self.eve is not None:
            out = self.eve.act(state[idx], photons[idx], eta_ch, rng)
            m_bob, s_bob, eta_bob = out.photons, out.state, out.transmittance
            eve_action[idx] = out.action
        else:
            m_bob, s_bob, eta_bob = photons[idx], state[idx], eta_ch
        # photons that pass the channel and would meet the best detector's efficiency
        k = rng.binomial(m_bob, np.clip(np.asarray(eta_bob) * self._eta_max, 0.0, 1.0))
        keep = k > 0
        p_idx, p_k, p_state = idx[keep], k[keep], s_bob[keep]
        angles = self.drift.angles_rad(self._seconds(first_slot + p_idx))
        # route each photon: detector j with probability t_j / eta_max, else lost
        q = self.detectors.detection_probabilities(p_state, angles) / self._eta_max if self._eta_max > 0 \
            else np.zeros((p_idx.size, 4))
        rep = np.repeat(np.arange(p_idx.size), p_k)
        cum = np.cumsum(q, axis=1)[rep]
        det = (rng.random(rep.size)[:, None] >= cum).sum(axis=1)      # 4 = lost
        hit = det < 4
        ph_key = np.unique(p_idx[rep[hit]].astype(np.int64) * 4 + det[hit])

        dark_key = bernoulli_positions(4 * n, self.detectors.dark_count_per_gate, rng)
        keys = np.concatenate([ph_key, dark_key])
        flags = np.concatenate([np.full(ph_key.size, CAUSE_PHOTON, np.uint8),
                                np.full(dark_key.size, CAUSE_DARK, np.uint8)])
        order = np.argsort(keys, kind="stable")
        keys, flags = keys[order], flags[order]
        if keys.size:
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            flags = np.bitwise_or.reduceat(flags, starts)
            keys = keys[starts]
        c_slot, c_det = first_slot + keys // 4, (keys % 4).astype(np.uint8)
        # sort by detector then slot for the sequential pass
        order = np.lexsort((c_slot, c_det))
        s_abs, d_ch, fl, suppressed = self.bank.process(first_slot, first_slot + n, c_slot[order],
                                                        c_det[order], flags[order])

        off = s_abs - first_slot
        t = self.pulse_time_ps(s_abs)
        if self.detectors.timing_jitter_ps > 0:
            t = t + rng.normal(0.0, self.detectors.timing_jitter_ps, t.size)
        sample = self.clock.sample_index(t)
        angle = np.full(s_abs.size, np.nan)
        ph = (fl & CAUSE_PHOTON) != 0
        if ph.any():
            angle[ph] = angles[np.searchsorted(p_idx, off[ph])]
        order = np.lexsort((d_ch, sample))
        return Detections(sample=sample[order], channel=d_ch[order], slot=s_abs[order],
                          photons=photons[off[order]], cause=fl[order], eve=eve_action[off[order]],
                          time_ps=t[order], angle_rad=angle[order], first_slot=first_slot, n_slots=n,
                          suppressed=suppressed)

    # -- Bob's input words --------------------------------------------------------------------
    def render(self, detections: Detections, sync_bits, n_clocks: int, *, first_clock: int = 0,
               sync_first_slot: int | None = None, pulse_width_samples: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Bob's detector and sync input words for clocks ``[first_clock, first_clock + n_clocks)``.

        Each click becomes a pulse of ``pulse_width_samples`` samples starting at its sample;
        pulses on one channel that overlap merge (OR), as on a wire. ``sync_bits`` are Alice's
        sync bits of the slots from ``sync_first_slot`` (default: the detections' first slot).
        Returns ``det_words`` (n_clocks, 4) uint64 and ``sync_words`` (n_clocks,) uint64, bit
        ``i`` = sample ``i`` of the clock (bit 0 earliest).
        """
        S = self.S
        n_clocks = check_int("n_clocks", n_clocks, 0, 1 << 40)
        first_clock = check_int("first_clock", first_clock, -(1 << 56), 1 << 56)
        w = self.pulse_width_samples if pulse_width_samples is None else \
            check_int("pulse_width_samples", pulse_width_samples, 1, 64)
        lo, hi = first_clock * S, (first_clock + n_clocks) * S
        det = np.zeros(n_clocks * 4, np.uint64)
        starts = np.asarray(detections.sample, dtype=np.int64)
        near = (starts + w > lo) & (starts < hi)
        smp = (starts[near][:, None] + np.arange(w)).ravel()
        ch = np.repeat(np.asarray(detections.channel, dtype=np.int64)[near], w)
        ok = (smp >= lo) & (smp < hi)
        smp, ch = smp[ok] - lo, ch[ok]
        np.bitwise_or.at(det, (smp // S) * 4 + ch, np.left_shift(np.uint64(1), (smp % S).astype(np.uint64)))

        sync = np.zeros(n_clocks, np.uint64)
        bits = np.asarray(sync_bits, dtype=bool)
        if self.epoch_slot is None:
            raise ValueError("render: propagate() must run first (the channel has no epoch yet)")
        first = detections.first_slot if sync_first_slot is None else sync_first_slot
        one = first + np.flatnonzero(bits)
        t0 = self._slot_start_ps(one) + self.pulse_delay_samples * self.sample_period_ps
        k_lo, k_hi = self.clock.samples_covering(t0, t0 + self.pulse_width_samples * self.sample_period_ps)
        span = int((k_hi - k_lo).max()) if one.size else 0
        if span > 0:
            cand = k_lo[:, None] + np.arange(span)
            m = (cand < k_hi[:, None]) & (cand >= lo) & (cand < hi)
            smp = cand[m] - lo
            np.bitwise_or.at(sync, smp // S, np.left_shift(np.uint64(1), (smp % S).astype(np.uint64)))
        return det.reshape(n_clocks, 4), sync
