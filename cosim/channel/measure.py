"""Statistics measured from ``Channel.propagate`` output, the counterpart of
:mod:`.expectations`: per intensity class the gain (slots with at least one click), the sifted
detections and their errors under the squashing rule of ``docs/receiver.md`` (one basis
clicked: that basis; both: a random basis; two clicks in the chosen basis: a random bit),
per-detector clicks, same-basis double clicks and cross-basis multi-clicks.

Clicks are grouped by their truth slot (the gate they belong to), not by Bob's sample: the
gateware's view of the same clicks is checked by the co-simulation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .source import CLASS_NAMES, decode_codes

__all__ = ["MeasuredClass", "measured_statistics", "click_masks", "squash", "binomial_tail", "compare"]


@dataclass
class MeasuredClass:
    name: str
    n_slots: int
    detections: int        # slots with at least one click
    sifted: int            # detections whose squashed basis equals Alice's
    errors: int            # sifted detections with the wrong bit
    detector_clicks: np.ndarray   # (4,)
    double_clicks: int
    cross_clicks: int

    @property
    def gain(self) -> float:
        return self.detections / self.n_slots if self.n_slots else float("nan")

    @property
    def qber(self) -> float:
        return self.errors / self.sifted if self.sifted else float("nan")


def click_masks(detections, n_slots: int, first_slot: int) -> np.ndarray:
    """(n_slots,) uint8: bit j set if detector j clicked in that slot."""
    mask = np.zeros(n_slots, np.uint8)
    off = np.asarray(detections.slot, dtype=np.int64) - first_slot
    ok = (off >= 0) & (off < n_slots)
    np.bitwise_or.at(mask, off[ok], (np.uint8(1) << detections.channel[ok].astype(np.uint8)))
    return mask


def squash(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Click patterns -> (basis, bit) by the squashing rule; patterns must be non-zero."""
    z, x = mask & 3, (mask >> 2) & 3
    r_basis = rng.integers(0, 2, mask.size)
    r_bit = rng.integers(0, 2, mask.size)
    basis = np.where((z != 0) & (x != 0), r_basis, (x != 0).astype(np.int64))
    sel = np.where(basis == 0, z, x)
    bit = np.where(sel == 3, r_bit, (sel == 2).astype(np.int64))
    return basis, bit


def measured_statistics(detections, codes, first_slot: int, rng: np.random.Generator) -> dict[str, MeasuredClass]:
    """Measured per-class statistics of the clicks of slots ``[first_slot, first_slot + len(codes))``."""
    a_bit, a_basis, intensity = decode_codes(codes)
    n = a_bit.size
    mask = click_masks(detections, n, first_slot)
    hit = np.flatnonzero(mask)
    m = mask[hit]
    basis, bit = squash(m, rng)
    sifted = basis == a_basis[hit]
    error = sifted & (bit != a_bit[hit])
    z, x = m & 3, (m >> 2) & 3
    dbl = ((z == 3) & (x == 0)) | ((x == 3) & (z == 0))
    cross = (z != 0) & (x != 0)
    cls_all = intensity
    cls_hit = intensity[hit]
    out = {}
    for c, name in enumerate(CLASS_NAMES):
        sel = cls_hit == c
        mc = m[sel]
        out[name] = MeasuredClass(
            name=name, n_slots=int(np.count_nonzero(cls_all == c)), detections=int(sel.sum()),
            sifted=int(sifted[sel].sum()), errors=int(error[sel].sum()),
            detector_clicks=np.array([int(np.count_nonzero(mc & (1 << j))) for j in range(4)]),
            double_clicks=int(dbl[sel].sum()), cross_clicks=int(cross[sel].sum()))
    return out


def binomial_tail(k: int, n: int, p: float) -> float:
    """Two-sided exact binomial tail probability of ``k`` successes in ``n`` trials at ``p``
    (``2 min(P[X <= k], P[X >= k])``, capped at 1). A value below ``2 * norm.sf(3) = 0.0027``
    is a deviation beyond the 3-sigma equivalent, valid for small counts too."""
    from scipy import stats
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * min(stats.binom.cdf(k, n, p), stats.binom.sf(k - 1, n, p))))


def compare(measured: dict, expected) -> list[dict]:
    """Rows ``{what, measured, trials, expected, z, tail}`` comparing measured per-class gains,
    QBERs, double and cross-basis clicks with :func:`.expectations.expected_statistics`."""
    rows = []
    for name, m in measured.items():
        e = expected[name]
        for what, k, n, p in (("gain", m.detections, m.n_slots, e.expected_gain),
                              ("qber", m.errors, m.sifted, e.expected_qber),
                              ("double", m.double_clicks, m.n_slots, e.double_click_probability),
                              ("cross", m.cross_clicks, m.n_slots, e.cross_click_probability)):
            if n == 0:
                continue
            sd = np.sqrt(n * p * (1 - p))
            z = (k - n * p) / sd if sd > 0 else (0.0 if k == n * p else float("inf"))
            rows.append(dict(what=f"{name} {what}", measured=k, trials=n, expected=p, z=float(z),
                             tail=binomial_tail(k, n, p)))
    return rows
