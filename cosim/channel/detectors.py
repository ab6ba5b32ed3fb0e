"""Bob's receiver: passive basis choice, two PBSs, four gated threshold detectors.

Optics. A photon reaching Bob takes the Z arm with probability ``p_z_bob`` (0.5: a 50/50 beam
splitter) and the X arm otherwise; the arm's PBS sends a photon at polarisation angle
``theta`` to its detector ``j`` (H 0, V 90, D 45, A 135 degrees) with probability
``cos^2(theta - theta_j)``; detector ``j`` registers it with efficiency ``eta_j``. So a photon
in state ``s`` rotated by ``phi`` is detected at ``j`` with probability
``t_j = p_arm(j) * cos^2(theta_s + phi - theta_j) * eta_j`` and lost otherwise. Photons
route independently, so for a coherent state of mean ``m`` the counts at the four detectors
are independent Poisson variables of means ``m t_j`` (Poisson splitting; exact).

Efficiency mismatch ``m`` (relative difference between the bit-0 and bit-1 detectors, the
one that efficiency-mismatch attacks exploit): ``eta_H = eta_D = eta (1 + m/2)``,
``eta_V = eta_A = eta (1 - m/2)``; the mean stays ``eta``.

Detectors are gated once per slot, the gate centred on the expected pulse arrival:

* dark count: probability ``dark_count_per_gate`` per detector and gate, independent;
* threshold: one click per detector and gate, whatever the number of photons;
* dead time ``D`` (non-paralysable): after a click at gate ``n0`` the detector ignores the
  gates ``n0 + k`` with ``k * T < D`` (``T`` the slot period), i.e. the next
  ``m_b = ceil(D/T) - 1`` gates; events in them are lost (counted as suppressed);
* afterpulsing: each click releases, with probability ``afterpulse_probability``, one trapped
  carrier a time ``D + E`` after it, ``E ~ Exp(afterpulse_decay_ns)`` (one trap family: the
  single-exponential model; real InGaAs SPADs need a sum or continuum of exponentials,
  Horoshko, Chizhevsky, Kilin, arXiv:1409.6752 (2014)); it avalanches in the first gate at or
  after that time, ``k = max(1, ceil((D + E)/T))`` gates later, if the detector is live then.
  The probability is thus that of an afterpulse once the detector is re-armed, as afterpulse
  measurements after a hold-off report it. Afterpulses cause afterpulses in turn;
* timing jitter: Gaussian, ``timing_jitter_ps`` rms, added to the arrival time of every
  click (photon, dark or afterpulse: all are avalanches inside a gate).

Dead time and afterpulses are sequential, so :class:`DetectorBank` walks the (sparse) click
candidates of each detector in time order; everything else is vectorised.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from ._checks import check_range

__all__ = ["Detectors", "DetectorBank", "DETECTOR_NAMES", "DETECTOR_BASIS", "DETECTOR_BIT",
           "POLARISATION_ANGLE_RAD", "CAUSE_PHOTON", "CAUSE_DARK", "CAUSE_AFTERPULSE",
           "bernoulli_positions"]

DETECTOR_NAMES = ("H", "V", "D", "A")
DETECTOR_BASIS = np.array([0, 0, 1, 1])
DETECTOR_BIT = np.array([0, 1, 0, 1])
# Polarisation angle of state s = 2*basis + bit, and of the detector with the same index.
POLARISATION_ANGLE_RAD = np.array([0.0, np.pi / 2, np.pi / 4, 3 * np.pi / 4])

CAUSE_PHOTON, CAUSE_DARK, CAUSE_AFTERPULSE = 1, 2, 4


def bernoulli_positions(n: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices in ``[0, n)`` of the successes of ``n`` Bernoulli(p) trials, drawn with
    geometric gaps (exact, O(n p) work)."""
    if p <= 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    if p >= 1:
        return np.arange(n, dtype=np.int64)
    out, start = [], -1
    while True:
        lam = (n - start) * p
        gaps = rng.geometric(p, size=int(lam + 6 * math.sqrt(lam) + 16))
        pos = start + np.cumsum(gaps)
        out.append(pos[pos < n])
        if pos[-1] >= n:
            break
        start = int(pos[-1])
    return np.concatenate(out).astype(np.int64)


@dataclass(frozen=True)
class Detectors:
    """Parameters of Bob's detection (see the module docstring)."""
    efficiency: float = 0.10
    dark_count_per_gate: float = 6e-7
    afterpulse_probability: float = 0.0
    afterpulse_decay_ns: float = 100.0
    dead_time_ns: float = 50.0
    timing_jitter_ps: float = 100.0
    efficiency_mismatch: float = 0.0
    p_z_bob: float = 0.5

    def __post_init__(self):
        check_range("detectors.efficiency", self.efficiency, 0.0, 1.0)
        check_range("detectors.dark_count_per_gate", self.dark_count_per_gate, 0.0, 1e-2, "1/gate")
        check_range("detectors.afterpulse_probability", self.afterpulse_probability, 0.0, 0.5)
        check_range("detectors.afterpulse_decay_ns", self.afterpulse_decay_ns, 0.0, 1e6, "ns")
        check_range("detectors.dead_time_ns", self.dead_time_ns, 0.0, 1e6, "ns")
        check_range("detectors.timing_jitter_ps", self.timing_jitter_ps, 0.0, 1e5, "ps")
        check_range("detectors.efficiency_mismatch", self.efficiency_mismatch, 0.0, 1.0)
        check_range("detectors.p_z_bob", self.p_z_bob, 0.0, 1.0)
        hi = self.efficiency * (1 + self.efficiency_mismatch / 2)
        if hi > 1:
            raise ValueError(f"detectors.efficiency_mismatch = {self.efficiency_mismatch!r}: must be in "
                             f"[0, {2 * (1 / self.efficiency - 1):.6g}] so that efficiency * (1 + mismatch/2) "
                             f"<= 1 (efficiency = {self.efficiency!r})")

    @classmethod
    def from_config(cls, det_cfg, *, p_z_bob: float = 0.5) -> "Detectors":
        d = det_cfg
        return cls(d.efficiency, d.dark_count_per_gate, d.afterpulse_probability, d.afterpulse_decay_ns,
                   d.dead_time_ns, d.timing_jitter_ps, d.efficiency_mismatch, p_z_bob)

    @property
    def efficiencies(self) -> np.ndarray:
        """Efficiency of detectors H, V, D, A."""
        m = self.efficiency_mismatch / 2
        return self.efficiency * np.array([1 + m, 1 - m, 1 + m, 1 - m])

    @property
    def arm_probabilities(self) -> np.ndarray:
        return np.array([self.p_z_bob, self.p_z_bob, 1 - self.p_z_bob, 1 - self.p_z_bob])

    def detection_probabilities(self, state, angle_rad) -> np.ndarray:
        """``(..., 4)`` probabilities ``t_j`` that one photon in ``state`` (rotated by
        ``angle_rad``) that reaches Bob is registered by detector ``j``."""
        theta = POLARISATION_ANGLE_RAD[np.asarray(state, dtype=np.intp)] + np.asarray(angle_rad)
        proj = np.cos(theta[..., None] - POLARISATION_ANGLE_RAD) ** 2
        return proj * (self.arm_probabilities * self.efficiencies)

    def dead_gates(self, slot_period_ps: float) -> int:
        """Gates lost after a click: ``m_b = #{k >= 1 : k T < D}``."""
        D = self.dead_time_ns * 1e3
        return max(0, math.ceil(D / slot_period_ps - 1e-12) - 1) if D > 0 else 0

    def afterpulse_gate_pmf(self, slot_period_ps: float, k_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(k, P(k))``: distribution of the afterpulse gate offset ``k = max(1, ceil((D+E)/T))``,
        truncated where the tail is below 1e-15 (the tail mass is added to the last entry)."""
        T, D, tau = slot_period_ps, self.dead_time_ns * 1e3, self.afterpulse_decay_ns * 1e3
        k0 = self.dead_gates(T) + 1
        if tau == 0:
            return np.array([k0]), np.array([1.0])
        k_end = int(math.ceil((D + tau * 35.0) / T)) + 1
        if k_max is not None:
            k_end = min(k_end, k_max)
        k = np.arange(k0, max(k0, k_end) + 1)
        F = -np.expm1(-np.maximum(0.0, k * T - D) / tau)
        p = np.diff(np.concatenate([[0.0], F]))
        p[-1] += 1.0 - F[-1]
        return k, p


class DetectorBank:
    """The four detectors' sequential state (dead time, pending afterpulses) across calls."""

    def __init__(self, detectors: Detectors, slot_period_ps: float, rng: np.random.Generator):
        self.det = detectors
        self.slot_period_ps = slot_period_ps
        self.dead_gates = detectors.dead_gates(slot_period_ps)
        self._rng = rng
        self._live_from = [-(1 << 62)] * 4          # first live slot of each detector
        self._pending: list[list[int]] = [[], [], [], []]

    def _afterpulse_offsets(self, n: int) -> np.ndarray:
        d = self.det
        D, tau, T = d.dead_time_ns * 1e3, d.afterpulse_decay_ns * 1e3, self.slot_period_ps
        E = self._rng.exponential(tau, n) if tau > 0 else np.zeros(n)
        return np.maximum(1, np.ceil((D + E) / T - 1e-9)).astype(np.int64)

    def process(self, lo: int, hi: int, slots: np.ndarray, dets: np.ndarray, flags: np.ndarray):
        """Click candidates in slots ``[lo, hi)`` -> clicks.

        ``slots`` (absolute, int64), ``dets`` and ``flags`` (cause bits) describe at most one
        candidate per (slot, detector). Returns ``(slots, dets, flags, suppressed[4])`` of the
        clicks, sorted by detector then slot.
        """
        d = self.det
        p_ap = d.afterpulse_probability
        out_s, out_d, out_f = [], [], []
        suppressed = np.zeros(4, dtype=np.int64)
        for j in range(4):
            sel = dets == j
            s_j, f_j = slots[sel], flags[sel]
            pend = [x for x in self._pending[j] if x >= lo]
            heapq.heapify(pend)
            if self.dead_gates == 0 and p_ap == 0:
                out_s.append(s_j), out_d.append(np.full(s_j.size, j, np.uint8)), out_f.append(f_j)
                continue
            # bulk random numbers for the afterpulse decisions (refilled if ever exhausted)
            budget = int(s_j.size * (1 + 2 * p_ap) + 64)
            u = self._rng.random(budget)
            off = self._afterpulse_offsets(budget) if p_ap > 0 else None
            ui = 0
            live_from = self._live_from[j]
            m_b = self.dead_gates
            res_s, res_f = [], []
            s_list, f_list = s_j.tolist(), f_j.tolist()
            i, n_c = 0, len(s_list)
            while True:
                nb = s_list[i] if i < n_c else hi
                na = pend[0] if pend else hi
                s = nb if nb < na else na
                if s >= hi:
                    break
                fl = 0
                if nb == s:
                    fl = f_list[i]
                    i += 1
                while pend and pend[0] == s:
                    heapq.heappop(pend)
                    fl |= CAUSE_AFTERPULSE
                if s < live_from:
                    suppressed[j] += 1
                    continue
                res_s.append(s)
                res_f.append(fl)
                live_from = s + m_b + 1
                if p_ap > 0:
                    if ui >= budget:
                        u = self._rng.random(budget)
                        off = self._afterpulse_offsets(budget)
                        ui = 0
                    if u[ui] < p_ap:
                        heapq.heappush(pend, s + int(off[ui]))
                    ui += 1
            self._live_from[j] = live_from
            self._pending[j] = pend
            out_s.append(np.asarray(res_s, dtype=np.int64))
            out_d.append(np.full(len(res_s), j, np.uint8))
            out_f.append(np.asarray(res_f, dtype=np.uint8))
        return (np.concatenate(out_s).astype(np.int64), np.concatenate(out_d),
                np.concatenate(out_f).astype(np.uint8), suppressed)
