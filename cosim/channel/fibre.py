"""Fibre link: loss, propagation delay, polarisation misalignment and its slow drift.

* Transmittance ``10**(-(loss_db_per_km * length_km + connector_loss_db) / 10)`` (the standard
  exponential fibre loss, e.g. Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005)).
* Delay ``length_km * group_index / c`` in ps (group index of SMF-28 at 1550 nm: 1.468).
* Polarisation: the channel rotates every linear polarisation by an angle ``phi`` (a rotation
  about the S3 axis of the Poincare sphere). A photon prepared at angle ``theta_s``
  (H 0, V 90, D 45, A 135 degrees) reaches the analyser at ``theta_s + phi``; the projection
  onto the detector at ``theta_j`` has probability ``cos^2(theta_s + phi - theta_j)``. In the
  prepared basis the error probability is ``sin^2 phi`` for all four states, which is the
  basis-independent misalignment ``e_d`` of Ma et al. 2005: ``phi0 = asin(sqrt(e_d))``.
  A general birefringent fibre would err differently in Z and X; the in-plane rotation is the
  model in which the usual single ``e_d`` is exact.
* Drift: ``phi(t) = phi0 + sigma * W(t)`` with ``W`` a standard Wiener process and ``sigma`` in
  rad/sqrt(s) (slow thermal/mechanical birefringence changes, uncompensated). It is sampled
  exactly at the (sparse) times where photons arrive: increments ``sigma * sqrt(dt) * N(0,1)``.
  Ensemble mean error: ``E[sin^2 phi(t)] = (1 - cos(2 phi0) exp(-2 sigma^2 t)) / 2``, rising
  from ``e_d`` towards 1/2 (``E[cos 2W] = exp(-2 sigma^2 t)`` for Gaussian ``W``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import check_range

__all__ = ["Fibre", "PolarisationDrift", "SPEED_OF_LIGHT_KM_PER_PS", "misalignment_angle_rad"]

SPEED_OF_LIGHT_KM_PER_PS = 299_792.458e-12   # km/ps (exact SI value of c)


def misalignment_angle_rad(error_probability: float) -> float:
    """Rotation angle whose basis error probability ``sin^2 phi`` is ``error_probability``."""
    e = check_range("misalignment", error_probability, 0.0, 0.5)
    return float(np.arcsin(np.sqrt(e)))


@dataclass(frozen=True)
class Fibre:
    """Loss and delay of a fibre span."""
    length_km: float = 65.0
    loss_db_per_km: float = 0.2
    connector_loss_db: float = 1.0
    group_index: float = 1.468

    def __post_init__(self):
        check_range("channel.length_km", self.length_km, 0.0, 5000.0, "km")
        check_range("channel.loss_db_per_km", self.loss_db_per_km, 0.0, 10.0, "dB/km")
        check_range("channel.connector_loss_db", self.connector_loss_db, 0.0, 60.0, "dB")
        check_range("channel.group_index", self.group_index, 1.0, 2.0)

    @classmethod
    def from_config(cls, channel_cfg) -> "Fibre":
        c = channel_cfg
        return cls(c.length_km, c.loss_db_per_km, c.connector_loss_db, c.group_index)

    @property
    def loss_db(self) -> float:
        return self.loss_db_per_km * self.length_km + self.connector_loss_db

    @property
    def transmittance(self) -> float:
        return 10.0 ** (-self.loss_db / 10.0)

    @property
    def delay_ps(self) -> float:
        return self.length_km * self.group_index / SPEED_OF_LIGHT_KM_PER_PS


class PolarisationDrift:
    """The channel's polarisation rotation angle over time (stateful: a Wiener path).

    :meth:`angles_rad` must be called with non-decreasing times across calls; the path
    continues from the last time asked for.
    """

    def __init__(self, misalignment: float, drift_rad_per_sqrt_s: float, rng: np.random.Generator):
        self.phi0_rad = misalignment_angle_rad(misalignment)
        self.sigma = check_range("channel.polarisation_drift_rad_per_sqrt_s", drift_rad_per_sqrt_s,
                                 0.0, 10.0, "rad/sqrt(s)")
        self._rng = rng
        self._t_last_s = 0.0
        self._phi_last = self.phi0_rad

    def angles_rad(self, times_s: np.ndarray) -> np.ndarray:
        """Rotation angle at each of ``times_s`` (seconds from the channel epoch, non-decreasing)."""
        times_s = np.asarray(times_s, dtype=float)
        if self.sigma == 0 or times_s.size == 0:
            return np.full(times_s.shape, self._phi_last if self.sigma else self.phi0_rad)
        dt = np.diff(times_s, prepend=self._t_last_s)
        if dt.min() < 0:
            raise ValueError("PolarisationDrift.angles_rad: times must not go backwards "
                             f"(last {self._t_last_s:g} s, asked {times_s.min():g} s)")
        phi = self._phi_last + np.cumsum(self.sigma * np.sqrt(dt) * self._rng.standard_normal(dt.size))
        self._t_last_s, self._phi_last = float(times_s[-1]), float(phi[-1])
        return phi

    def mean_error(self, t_s) -> np.ndarray:
        """Ensemble mean basis error ``E[sin^2 phi(t)]`` at time ``t_s``."""
        t = np.asarray(t_s, dtype=float)
        return 0.5 * (1.0 - np.cos(2 * self.phi0_rad) * np.exp(-2 * self.sigma ** 2 * t))

    def mean_error_over(self, t0_s: float, t1_s: float) -> float:
        """Ensemble mean basis error averaged over the window ``[t0_s, t1_s]``."""
        a = 2 * self.sigma ** 2
        if a == 0 or t1_s <= t0_s:
            return float(self.mean_error(t0_s))
        avg = (np.exp(-a * t0_s) - np.exp(-a * t1_s)) / (a * (t1_s - t0_s))
        return float(0.5 * (1.0 - np.cos(2 * self.phi0_rad) * avg))
