"""Satellite-to-ground downlink over one pass: elevation, range, loss and delay versus time.

Geometry: circular orbit of altitude ``h`` above a spherical Earth (R = 6371 km), angular rate
``omega = sqrt(GM / (R + h)^3)``; the Earth's rotation is neglected (it changes a pass's
duration by a few per cent, not its shape). Time ``t`` is measured from culmination; the
pass is symmetric in ``t``. With ``gamma_min`` the Earth-central angle between station and
satellite at culmination (from the maximum elevation), the spherical right triangle gives
``cos gamma(t) = cos gamma_min * cos(omega t)``; then
``d = sqrt(R^2 + r^2 - 2 R r cos gamma)`` (slant range, ``r = R + h``) and
``sin(elevation) = (r cos gamma - R) / d``.

Loss in dB = geometric + atmospheric + fixed:

* geometric (diffraction): a Gaussian beam of full 1/e^2 divergence ``theta`` and waist radius
  ``w0`` (half the transmit aperture) has radius ``w(d) = sqrt(w0^2 + (theta d / 2)^2)``; a
  receive aperture of radius ``a`` collects ``1 - exp(-2 a^2 / w^2)``;
* atmospheric: ``zenith_atmospheric_loss_db * AM(elevation)``, air mass after Kasten & Young,
  Appl. Opt. 28, 4735 (1989); this is an *effective* coefficient that also carries the
  elevation-dependent turbulence and pointing losses;
* fixed: receiver optics and pointing (Bob's detector efficiency is *not* included; it is in
  ``detectors``).

Defaults are those of the Micius downlink (S.-K. Liao et al., "Satellite-to-ground quantum
key distribution", Nature 549, 43 (2017)): orbit ~500 km; ~10 urad beam divergence from the
300 mm transmit telescope; 1 m receive telescope at Xinglong; over a pass the slant range
runs from 645 km to 1,200 km with a measured link loss of about 22 dB (near) to 35 dB (far).
The two loss coefficients are fitted to those two end points (derived here; the end-point
values should be checked against the paper's figure: unconfirmed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import check_range
from .fibre import SPEED_OF_LIGHT_KM_PER_PS

__all__ = ["SatellitePass", "EARTH_RADIUS_KM", "EARTH_GM_KM3_PER_S2", "air_mass",
           "MICIUS_NEAR_RANGE_KM", "MICIUS_NEAR_LOSS_DB", "MICIUS_FAR_RANGE_KM", "MICIUS_FAR_LOSS_DB"]

EARTH_RADIUS_KM = 6371.0            # mean Earth radius
EARTH_GM_KM3_PER_S2 = 398_600.4418  # WGS-84 gravitational parameter

# Micius downlink anchors (Liao et al., Nature 549, 43 (2017); values unconfirmed, see above).
MICIUS_NEAR_RANGE_KM, MICIUS_NEAR_LOSS_DB = 645.0, 22.0
MICIUS_FAR_RANGE_KM, MICIUS_FAR_LOSS_DB = 1200.0, 35.0


def air_mass(elevation_deg) -> np.ndarray:
    """Relative optical air mass (Kasten & Young 1989), 1 at zenith, ~38 at the horizon."""
    e = np.asarray(elevation_deg, dtype=float)
    return 1.0 / (np.sin(np.radians(e)) + 0.50572 * (e + 6.07995) ** -1.6364)


@dataclass(frozen=True)
class SatellitePass:
    """One LEO pass over a ground station; all functions take ``t_s`` from culmination."""
    altitude_km: float = 500.0
    max_elevation_deg: float = 90.0
    min_elevation_deg: float = 10.0
    beam_divergence_urad: float = 10.0
    tx_aperture_m: float = 0.3
    rx_aperture_m: float = 1.0
    zenith_atmospheric_loss_db: float = 4.8   # fitted to the Micius end points (derived)
    fixed_loss_db: float = 2.4                # fitted to the Micius end points (derived)

    def __post_init__(self):
        check_range("satellite.altitude_km", self.altitude_km, 160.0, 2000.0, "km")
        check_range("satellite.max_elevation_deg", self.max_elevation_deg, 0.0, 90.0, "deg", lo_open=True)
        check_range("satellite.min_elevation_deg", self.min_elevation_deg, 0.0, self.max_elevation_deg, "deg")
        check_range("satellite.beam_divergence_urad", self.beam_divergence_urad, 0.1, 1000.0, "urad")
        check_range("satellite.tx_aperture_m", self.tx_aperture_m, 0.001, 10.0, "m")
        check_range("satellite.rx_aperture_m", self.rx_aperture_m, 0.001, 20.0, "m")
        check_range("satellite.zenith_atmospheric_loss_db", self.zenith_atmospheric_loss_db, 0.0, 30.0, "dB")
        check_range("satellite.fixed_loss_db", self.fixed_loss_db, 0.0, 60.0, "dB")

    # -- geometry -----------------------------------------------------------------------------
    @property
    def orbit_radius_km(self) -> float:
        return EARTH_RADIUS_KM + self.altitude_km

    @property
    def angular_rate_rad_per_s(self) -> float:
        return float(np.sqrt(EARTH_GM_KM3_PER_S2 / self.orbit_radius_km ** 3))

    @property
    def orbital_period_s(self) -> float:
        return 2 * np.pi / self.angular_rate_rad_per_s

    def _central_angle(self, elevation_deg) -> np.ndarray:
        e = np.radians(elevation_deg)
        return np.pi / 2 - e - np.arcsin(EARTH_RADIUS_KM * np.cos(e) / self.orbit_radius_km)

    def _cos_gamma(self, t_s) -> np.ndarray:
        g0 = self._central_angle(self.max_elevation_deg)
        return np.cos(g0) * np.cos(self.angular_rate_rad_per_s * np.asarray(t_s, dtype=float))

    def range_km(self, t_s) -> np.ndarray:
        R, r = EARTH_RADIUS_KM, self.orbit_radius_km
        return np.sqrt(R * R + r * r - 2 * R * r * self._cos_gamma(t_s))

    def elevation_deg(self, t_s) -> np.ndarray:
        cg = self._cos_gamma(t_s)
        d = self.range_km(t_s)
        return np.degrees(np.arcsin(np.clip((self.orbit_radius_km * cg - EARTH_RADIUS_KM) / d, -1, 1)))

    def visible_half_width_s(self) -> float:
        """Half the time the satellite stays above ``min_elevation_deg``."""
        g0 = self._central_angle(self.max_elevation_deg)
        g1 = self._central_angle(self.min_elevation_deg)
        return float(np.arccos(np.clip(np.cos(g1) / np.cos(g0), -1, 1)) / self.angular_rate_rad_per_s)

    def elevation_for_range_deg(self, range_km) -> np.ndarray:
        """Elevation at which the slant range is ``range_km`` (law of cosines)."""
        d = np.asarray(range_km, dtype=float)
        R, r = EARTH_RADIUS_KM, self.orbit_radius_km
        return np.degrees(np.arcsin((r * r - R * R - d * d) / (2 * R * d)))

    # -- loss ---------------------------------------------------------------------------------
    def geometric_loss_db_at_range(self, range_km) -> np.ndarray:
        d_m = np.asarray(range_km, dtype=float) * 1e3
        w = np.sqrt((self.tx_aperture_m / 2) ** 2 + (0.5 * self.beam_divergence_urad * 1e-6 * d_m) ** 2)
        a = self.rx_aperture_m / 2
        return -10 * np.log10(-np.expm1(-2 * a * a / (w * w)))

    def loss_db_at_range(self, range_km) -> np.ndarray:
        """Total loss (dB) when the slant range is ``range_km``."""
        return (self.geometric_loss_db_at_range(range_km)
                + self.zenith_atmospheric_loss_db * air_mass(self.elevation_for_range_deg(range_km))
                + self.fixed_loss_db)

    def loss_db(self, t_s) -> np.ndarray:
        return self.loss_db_at_range(self.range_km(t_s))

    def transmittance(self, t_s) -> np.ndarray:
        """Channel transmittance at ``t_s``; 0 while the satellite is below ``min_elevation_deg``."""
        t = np.asarray(t_s, dtype=float)
        eta = 10.0 ** (-self.loss_db(t) / 10.0)
        return np.where(self.elevation_deg(t) >= self.min_elevation_deg, eta, 0.0)

    def delay_ps(self, t_s) -> np.ndarray:
        """One-way light time (ps) at ``t_s`` (vacuum; the atmosphere adds < 10 ns)."""
        return self.range_km(t_s) / SPEED_OF_LIGHT_KM_PER_PS
