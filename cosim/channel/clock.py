"""Bob's sample clock against Alice's: a frequency offset (ppm) and a fixed delay.

Times are in ps on a common timeline whose origin is the moment the light of Alice's *epoch*
slot start reaches Bob (the channel subtracts the path delay at the epoch). Alice's samples
have period ``Ts = 1e6 / (clock_mhz * S)`` ps. Bob's clock runs ``offset_ppm`` fast
(``f_B = f_A (1 + offset_ppm * 1e-6)``, period ``Tb = Ts / (1 + offset_ppm * 1e-6)``) and
its sample 0 begins at ``start_ps``; a click at time ``t`` lands in Bob's sample
``floor((t - start_ps) / Tb)``, and a level (the sync) is sampled at sample centres
``start_ps + (k + 1/2) Tb``.

With ``offset_ppm = 0`` and ``start_ps = 0``, Alice's sample ``k`` and Bob's sample ``k``
coincide; an offset makes slot ``n``'s pulse drift by ``n * K * offset_ppm * 1e-6`` samples.
The fixed delay (``Channel(extra_delay_ps=...)``) moves every arrival later by that many ps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import check_range

__all__ = ["SampleClock"]


@dataclass(frozen=True)
class SampleClock:
    sample_period_ps: float          # Alice's nominal sample period Ts
    offset_ppm: float = 0.0
    start_ps: float = 0.0

    def __post_init__(self):
        check_range("sample_period_ps", self.sample_period_ps, 0.0, 1e9, "ps", lo_open=True)
        check_range("clock_offset_ppm", self.offset_ppm, -1000.0, 1000.0, "ppm")
        check_range("clock start_ps", self.start_ps, -1e15, 1e15, "ps")

    @property
    def bob_sample_period_ps(self) -> float:
        return self.sample_period_ps / (1.0 + self.offset_ppm * 1e-6)

    def sample_index(self, t_ps) -> np.ndarray:
        """Bob's sample (int64) containing time ``t_ps``."""
        return np.floor((np.asarray(t_ps, dtype=float) - self.start_ps) / self.bob_sample_period_ps).astype(np.int64)

    def sample_start_ps(self, k) -> np.ndarray:
        return self.start_ps + np.asarray(k, dtype=float) * self.bob_sample_period_ps

    def samples_covering(self, t0_ps, t1_ps) -> tuple[np.ndarray, np.ndarray]:
        """``[k_lo, k_hi)``: Bob's samples whose centre lies in ``[t0_ps, t1_ps)`` (a level)."""
        Tb = self.bob_sample_period_ps
        lo = np.ceil((np.asarray(t0_ps, dtype=float) - self.start_ps) / Tb - 0.5).astype(np.int64)
        hi = np.ceil((np.asarray(t1_ps, dtype=float) - self.start_ps) / Tb - 0.5).astype(np.int64)
        return lo, hi
