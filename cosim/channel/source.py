"""Alice's weak coherent pulse source: photon number per pulse for each 4-bit symbol.

Symbols (``docs/transmitter.md``): ``bit`` [0], ``basis`` [1] (0 = Z: H/V, 1 = X: D/A),
``intensity`` [2:4] (0 signal, 1 decoy, 2 vacuum, 3 blank = no pulse). The polarisation
state index is ``state = 2*basis + bit``: 0 = H, 1 = V, 2 = D, 3 = A.

Model, per pulse (phase-randomised weak coherent pulse, so the photon number is Poissonian;
Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), Sec. II):

* class mean ``mu_c``: ``mu_signal``, ``mu_decoy``, and for the vacuum class ``mu_vacuum`` if it
  is > 0, else the intensity modulator's leakage ``mu_signal * 10**(-vacuum_extinction_db/10)``
  (a real modulator never reaches zero);
* relative intensity fluctuation: ``mu = mu_c * f`` with ``f = clip(1 + s*z, 1-c, 1+c)``,
  ``z ~ N(0, 1)``, ``s = intensity_fluctuation_rel``, ``c = min(3 s, 1)``; the clip is symmetric
  so ``E[f] = 1`` exactly and ``f >= 0``;
* photon number ``n ~ Poisson(mu)``; blank slots emit nothing (n = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from ._checks import check_range

__all__ = ["INTENSITY_SIGNAL", "INTENSITY_DECOY", "INTENSITY_VACUUM", "INTENSITY_BLANK",
           "CLASS_NAMES", "STATE_NAMES", "Source", "decode_codes", "encode_codes", "random_codes"]

INTENSITY_SIGNAL, INTENSITY_DECOY, INTENSITY_VACUUM, INTENSITY_BLANK = 0, 1, 2, 3
CLASS_NAMES = ("signal", "decoy", "vacuum", "blank")
STATE_NAMES = ("H", "V", "D", "A")


def decode_codes(codes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4-bit symbols -> (bit, basis, intensity), each uint8. ValueError if a code is >= 16."""
    codes = np.asarray(codes)
    if codes.ndim != 1:
        raise ValueError(f"codes: must be a 1-D array of 4-bit symbols, got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() > 15):
        raise ValueError(f"codes: every symbol must be in [0, 15], got [{codes.min()}, {codes.max()}]")
    codes = codes.astype(np.uint8, copy=False)
    return codes & 1, (codes >> 1) & 1, (codes >> 2) & 3


def encode_codes(bit, basis, intensity) -> np.ndarray:
    """(bit, basis, intensity) -> 4-bit symbols (uint8); blank symbols get bit = basis = 0."""
    bit, basis, intensity = (np.asarray(x, dtype=np.uint8) for x in (bit, basis, intensity))
    blank = intensity == INTENSITY_BLANK
    return np.where(blank, INTENSITY_BLANK << 2, bit | (basis << 1) | (intensity << 2)).astype(np.uint8)


def random_codes(n: int, source_cfg, rng: np.random.Generator, *, p_blank: float = 0.0) -> np.ndarray:
    """``n`` i.i.d. symbols with Alice's probabilities (``source.p_*``, ``p_z_basis``) and a
    fraction ``p_blank`` of blank slots, for channel studies without the gateware model."""
    p_blank = check_range("p_blank", p_blank, 0.0, 1.0)
    s = source_cfg
    p = np.array([s.p_signal, s.p_decoy, s.p_vacuum], dtype=float)
    p = np.append(p / p.sum() * (1.0 - p_blank), p_blank)
    intensity = rng.choice(4, size=n, p=p).astype(np.uint8)
    basis = (rng.random(n) >= s.p_z_basis).astype(np.uint8)
    bit = rng.integers(0, 2, n, dtype=np.uint8)
    return encode_codes(bit, basis, intensity)


@dataclass(frozen=True)
class Source:
    """Weak coherent pulse source (see the module docstring for the model)."""
    mu_signal: float = 0.5
    mu_decoy: float = 0.1
    mu_vacuum: float = 0.0
    intensity_fluctuation_rel: float = 0.0
    vacuum_extinction_db: float = 30.0

    def __post_init__(self):
        check_range("source.mu_signal", self.mu_signal, 0.0, 10.0, "photons/pulse")
        check_range("source.mu_decoy", self.mu_decoy, 0.0, 10.0, "photons/pulse")
        check_range("source.mu_vacuum", self.mu_vacuum, 0.0, 0.1, "photons/pulse")
        check_range("source.intensity_fluctuation_rel", self.intensity_fluctuation_rel, 0.0, 0.5)
        check_range("source.vacuum_extinction_db", self.vacuum_extinction_db, 0.0, 80.0, "dB")

    @classmethod
    def from_config(cls, source_cfg) -> "Source":
        s = source_cfg
        return cls(s.mu_signal, s.mu_decoy, s.mu_vacuum, s.intensity_fluctuation_rel, s.vacuum_extinction_db)

    @property
    def class_means(self) -> np.ndarray:
        """Mean photon number per intensity code 0..3 (signal, decoy, vacuum incl. leakage, blank)."""
        vac = self.mu_vacuum if self.mu_vacuum > 0 else self.mu_signal * 10.0 ** (-self.vacuum_extinction_db / 10.0)
        return np.array([self.mu_signal, self.mu_decoy, vac, 0.0])

    @property
    def _clip(self) -> float:
        return min(3.0 * self.intensity_fluctuation_rel, 1.0)

    def pulse_means(self, intensity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Mean photon number of every pulse (float64), fluctuations included."""
        mu = self.class_means[np.asarray(intensity, dtype=np.intp)]
        s = self.intensity_fluctuation_rel
        if s > 0:
            c = self._clip
            mu = mu * np.clip(1.0 + s * rng.standard_normal(mu.shape), 1.0 - c, 1.0 + c)
        return mu

    def emit(self, intensity: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(mean, photon number) of every pulse; photon numbers are int32."""
        mu = self.pulse_means(intensity, rng)
        return mu, rng.poisson(mu).astype(np.int32)

    def fluctuation_nodes(self, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
        """Quadrature ``(f, w)`` with ``E[g(f)] = sum(w * g(f))`` for the clipped Gaussian factor:
        the two clip points carry the clipped tails, the interior uses Gauss-Legendre in ``z``
        with the normal density (accurate to ~1e-12 for the smooth functions used here)."""
        s = self.intensity_fluctuation_rel
        if s == 0:
            return np.ones(1), np.ones(1)
        c = self._clip
        zc = c / s
        x, wx = np.polynomial.legendre.leggauss(n)
        z = zc * x
        w = wx * zc * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        tail = 0.5 * special.erfc(zc / np.sqrt(2))
        return np.concatenate([[1 - c, 1 + c], 1 + s * z]), np.concatenate([[tail, tail], w])
