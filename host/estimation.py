"""Parameter estimation and secret key length of one block of decoy-state BB84.

From the sifted data of a block — per intensity, the key-basis (Z) detections, the
test-basis (X) detections and the X errors (every X bit is disclosed) — this module bounds
what an eavesdropper can know and turns the bound into the length of the final key, after
Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014) ("Lim 2014"). The decoy bounds
themselves (Hoeffding-corrected vacuum and single-photon counts, the single-photon phase
error) are :func:`qkdlink.host.theory.lim2014_from_counts`; this module adds the data
handling, the aborts, the key-basis QBER sample and the key-length ledger. See
``docs/estimation.md``.

Pipeline (``host/distill.py``)::

    counts = ObservedCounts(n_pulses, n_key, n_test, m_test)          # or counts_from_sifted()
    idx = sample_for_qber(n_key_bits, sample_bits, seed)               # disclose these Z bits
    est = estimate(counts, mu=..., p=..., eps_sec=..., qber_sample=(errors, sample_bits))
    ... error correction on the remaining Z bits (leaks lambda_EC), verification (tag bits) ...
    kl = secret_key_length(est, leaked_ec_bits=..., sampled_bits=sample_bits,
                           verification_bits=..., eps_sec=..., eps_cor=...)

Where ``eps_sec`` goes (Lim 2014, App. B, Eq. (B4), every term set to ``eps = eps_sec/21``):
``10 eps`` to the Hoeffding bounds on the detection counts per intensity (the
``ln(21/eps_sec)`` inside ``n±``), ``2 eps`` to those on the test-basis error counts
(``m±``), ``4 eps`` to the random-sampling bound on the phase error (``21^2/eps_sec^2`` in
``gamma``), ``4 eps`` to the two smoothing terms of the entropy chain rules and ``eps`` to the
leftover hash lemma (together the ``6 log2(21/eps_sec)`` bits). ``eps_cor`` is the
verification hash's collision probability (``log2(2/eps_cor)``).

The key-basis QBER sample does not take a share of ``eps_sec`` or ``eps_cor``: its upper bound
only steers decisions (abort above ``qber_abort``, the error-correction code rate). If that
bound fails (probability ``qber_eps``), error correction may leave errors, which verification
catches (``eps_cor``) or which aborts the block; what error correction really disclosed is
subtracted as ``leaked_ec_bits`` whatever the estimate was. The sample must be drawn after the
sifted key is fixed, from a seed the adversary cannot influence (announced over the
authenticated channel).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from numbers import Integral

import numpy as np
from scipy import stats as _stats

from . import theory

__all__ = ["EstimationAbort", "ObservedCounts", "counts_from_sifted", "sample_for_qber", "qber_upper_bound",
           "Estimate", "estimate", "estimate_from_config", "KeyLength", "secret_key_length", "security_bits",
           "INTENSITIES"]

#: Intensity classes in the order of every per-intensity tuple (``hdl/symbols.py``: 0, 1, 2).
INTENSITIES = ("signal", "decoy", "vacuum")


class EstimationAbort(RuntimeError):
    """No key can be extracted from this block. ``reason``: one line naming the failed bound
    and its numbers."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- observed counts

def _count(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral):
        raise ValueError(f"{name} = {value!r}: must be an integer count")
    if value < 0:
        raise ValueError(f"{name} = {value!r}: must be >= 0")
    return int(value)


def _triple(name: str, value) -> tuple[int, int, int]:
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name} = {value!r}: must be 3 counts (signal, decoy, vacuum)") from None
    if len(items) != 3:
        raise ValueError(f"{name} = {value!r}: must be 3 counts (signal, decoy, vacuum), got {len(items)}")
    return tuple(_count(f"{name}[{k}] ({INTENSITIES[k]})", v) for k, v in enumerate(items))


@dataclass(frozen=True)
class ObservedCounts:
    """Sifted counts of one block. Tuples are per intensity (signal, decoy, vacuum).

    ``n_pulses``: pulses sent in the block (all intensities, both bases); ``n_key``: Z-basis
    (key) sifted detections; ``n_test``: X-basis (test) sifted detections; ``m_test``: X-basis
    errors (all X bits are disclosed). Validated on construction (``ValueError`` naming the
    field): non-negative integers, ``m_test <= n_test`` per intensity, ``n_pulses >= 1`` and
    at least as many pulses as sifted detections.
    """
    n_pulses: int
    n_key: tuple[int, int, int]
    n_test: tuple[int, int, int]
    m_test: tuple[int, int, int]

    def __post_init__(self):
        n_pulses = _count("n_pulses", self.n_pulses)
        if n_pulses < 1:
            raise ValueError(f"n_pulses = {n_pulses}: must be >= 1")
        n_key, n_test, m_test = (_triple(f, getattr(self, f)) for f in ("n_key", "n_test", "m_test"))
        for k in range(3):
            if m_test[k] > n_test[k]:
                raise ValueError(f"m_test[{k}] ({INTENSITIES[k]}) = {m_test[k]} errors > n_test[{k}] = "
                                 f"{n_test[k]} detections")
        if sum(n_key) + sum(n_test) > n_pulses:
            raise ValueError(f"n_key + n_test = {sum(n_key) + sum(n_test)} sifted detections > n_pulses = "
                             f"{n_pulses} pulses sent")
        for f, v in (("n_pulses", n_pulses), ("n_key", n_key), ("n_test", n_test), ("m_test", m_test)):
            object.__setattr__(self, f, v)

    @property
    def n_key_total(self) -> int:
        return sum(self.n_key)

    @property
    def n_test_total(self) -> int:
        return sum(self.n_test)

    @property
    def m_test_total(self) -> int:
        return sum(self.m_test)

    def as_dict(self) -> dict:
        return {"n_pulses": self.n_pulses, "n_key": list(self.n_key), "n_test": list(self.n_test),
                "m_test": list(self.m_test)}


def _rows(name: str, rows) -> np.ndarray:
    try:
        a = np.asarray(rows, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name}: must be rows of integers (slot, key_byte)") from None
    if a.size == 0:
        return np.zeros((0, 2), np.int64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name}: must be rows (slot, key_byte), got an array of shape {a.shape}")
    bad = np.flatnonzero((a[:, 1] < 0) | (a[:, 1] > 0x0F) | ((a[:, 1] >> 2) == 3))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}]: key byte {int(a[i, 1])!r} is not bit | basis << 1 | intensity << 2 "
                         f"with intensity 0..2")
    return a


def counts_from_sifted(alice_rows, bob_rows, n_pulses: int) -> ObservedCounts:
    """Counts of a block from both ends' sifted keys, when both are in one process (tests,
    simulation). Rows are ``(slot, key_byte)``, ``key_byte = bit | basis << 1 | intensity << 2``
    (``gateware/protocol.py: key_byte``), basis 0 = Z (key), 1 = X (test); Alice's bit against
    Bob's gives the X errors (key-basis errors are not counted: they are not public).

    Both lists must hold the same slots in the same order with the same basis and intensity
    (``ValueError`` naming the first row that differs).
    """
    a, b = _rows("alice_rows", alice_rows), _rows("bob_rows", bob_rows)
    if len(a) != len(b):
        raise ValueError(f"alice_rows has {len(a)} rows but bob_rows has {len(b)}: the sifted keys must "
                         "list the same slots")
    for what, diff in (("slot", a[:, 0] != b[:, 0]), ("basis/intensity", ((a[:, 1] ^ b[:, 1]) & 0x0E) != 0)):
        where = np.flatnonzero(diff)
        if where.size:
            i = int(where[0])
            raise ValueError(f"row {i}: {what} differs (alice {a[i].tolist()}, bob {b[i].tolist()})")
    cls = a[:, 1] >> 1                                    # 2 * intensity + basis
    per_class = np.bincount(cls, minlength=6)
    err_class = np.bincount(cls[((a[:, 1] ^ b[:, 1]) & 1) == 1], minlength=6)
    n_key, n_test, m_test = per_class[0::2], per_class[1::2], err_class[1::2]
    return ObservedCounts(n_pulses=n_pulses, n_key=tuple(int(x) for x in n_key),
                          n_test=tuple(int(x) for x in n_test), m_test=tuple(int(x) for x in m_test))


# --------------------------------------------------------------------------- key-basis QBER sample

def sample_for_qber(n_key_bits: int, sample_bits: int, seed: int) -> np.ndarray:
    """Sorted indices (``int64``) of the ``sample_bits`` key-basis bits to disclose for the QBER
    estimate: a uniformly random subset of ``range(n_key_bits)`` (without replacement), drawn
    with numpy's PCG64 from ``seed``. Both ends compute the same subset from the same seed.
    """
    n = _count("n_key_bits", n_key_bits)
    k = _count("sample_bits", sample_bits)
    s = _count("seed", seed)
    if k > n:
        raise ValueError(f"sample_bits = {k}: more than the n_key_bits = {n} bits to sample from")
    idx = np.random.Generator(np.random.PCG64(s)).choice(n, size=k, replace=False)
    return np.sort(idx.astype(np.int64))


def _serfling_delta(sample_bits: int, rest_bits: int, eps: float) -> float:
    n_all = sample_bits + rest_bits
    return n_all / rest_bits * math.sqrt((1.0 - (sample_bits - 1) / n_all) * math.log(1.0 / eps)
                                         / (2.0 * sample_bits))


def qber_upper_bound(errors: int, sample_bits: int, population_bits: int, eps: float,
                     method: str = "hypergeometric") -> float:
    """Upper bound on the error rate of the ``population_bits - sample_bits`` bits that were NOT
    sampled, from ``errors`` errors in a uniform random sample (without replacement) of
    ``sample_bits`` of the ``population_bits`` key-basis bits; it fails with probability at most
    ``eps`` (whatever the error pattern, as long as the sample was chosen independently of it).

    ``method="hypergeometric"`` (default, exact): with ``K`` errors in the population the
    sample's count is hypergeometric; ``K_max`` is the largest ``K`` with
    ``P[X <= errors | K] > eps`` (inversion of the tail, as for a Clopper-Pearson bound), and
    the bound is ``(K_max - errors) / (population_bits - sample_bits)``.
    ``method="serfling"``: the closed form from Serfling's inequality for sampling without
    replacement (R. J. Serfling, Ann. Statist. 2, 39 (1974), Cor. 1.1):
    ``P[mean_sample <= mean_all - t] <= exp(-2 k t^2 / (1 - (k - 1)/N))`` with ``N`` bits, ``k``
    sampled; since ``mean_rest - mean_sample = N/(N - k) (mean_all - mean_sample)``, the rate
    of the rest is below ``errors/k + N/(N - k) sqrt((1 - (k - 1)/N) ln(1/eps) / (2k))``.
    The exact bound is never above the Serfling one. Result clipped to [0, 1].
    """
    e = _count("errors", errors)
    k = _count("sample_bits", sample_bits)
    n_all = _count("population_bits", population_bits)
    if k < 1:
        raise ValueError(f"sample_bits = {k}: must be >= 1")
    if e > k:
        raise ValueError(f"errors = {e}: more than the sample_bits = {k} sampled bits")
    if n_all <= k:
        raise ValueError(f"population_bits = {n_all}: must exceed sample_bits = {k} (no unsampled bits left)")
    eps = float(eps)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps = {eps!r}: must be in (0, 1)")
    rest = n_all - k
    if method == "serfling":
        return min(1.0, e / k + _serfling_delta(k, rest, eps))
    if method != "hypergeometric":
        raise ValueError(f"method = {method!r}: must be 'hypergeometric' or 'serfling'")
    # P[X <= e | K] falls as K grows: search the largest K with tail > eps. The search starts
    # from Serfling's K and evaluates _SEARCH_POINTS tails per (vectorised) scipy call: the same
    # K as a bisection from [e, e + rest], in a few calls instead of ~20.
    lo, hi = e, e + rest                      # K = e is always consistent (tail 1)
    # Serfling's bound is never below the exact one: its K (+1) usually brackets K_max tightly
    serf = e + math.floor(min(1.0, e / k + _serfling_delta(k, rest, eps)) * rest) + 1
    if serf < hi and _stats.hypergeom.cdf(e, n_all, serf, k) <= eps:
        hi = serf
    elif _stats.hypergeom.cdf(e, n_all, hi, k) > eps:
        return 1.0
    while hi - lo > 1:                        # invariant: tail(lo) > eps >= tail(hi)
        step = -(-(hi - lo) // _SEARCH_POINTS)
        ks = np.arange(lo + step, hi, step, dtype=np.int64)
        above = _stats.hypergeom.cdf(e, n_all, ks, k) > eps
        i = int(np.argmin(above)) if not above.all() else ks.size   # first K at or below eps
        if i:
            lo = int(ks[i - 1])
        if i < ks.size:
            hi = int(ks[i])
        else:
            hi = min(hi, lo + step)
    return (lo - e) / rest


_SEARCH_POINTS = 8


# --------------------------------------------------------------------------- estimate

def _validate_protocol(mu, p, eps_sec) -> tuple[tuple[float, float, float], tuple[float, float, float], float]:
    try:
        mu1, mu2, mu3 = (float(x) for x in mu)
        p1, p2, p3 = (float(x) for x in p)
    except (TypeError, ValueError):
        raise ValueError(f"mu = {mu!r}, p = {p!r}: must be 3 numbers each (signal, decoy, vacuum)") from None
    if not (math.isfinite(mu1) and 0.0 <= mu3 < mu2 and mu2 + mu3 < mu1 <= 10.0):
        raise ValueError(f"mu = {(mu1, mu2, mu3)!r} photons/pulse: Lim 2014 needs mu_signal > mu_decoy + "
                         "mu_vacuum and mu_decoy > mu_vacuum >= 0")
    for name, v in zip(("p_signal", "p_decoy", "p_vacuum"), (p1, p2, p3)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name} = {v!r}: must be in (0, 1)")
    if abs(p1 + p2 + p3 - 1.0) > 1e-9:
        raise ValueError(f"p_signal + p_decoy + p_vacuum = {p1 + p2 + p3:.12g}: must sum to 1")
    eps = float(eps_sec)
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps_sec = {eps_sec!r}: must be in (0, 1)")
    return (mu1, mu2, mu3), (p1, p2, p3), eps


@dataclass(frozen=True)
class Estimate:
    """Result of :func:`estimate` for one block (per-intensity tuples: signal, decoy, vacuum).

    ``gain_key[k]``, ``gain_test[k]``: sifted detections of that basis per pulse of intensity
    ``k`` sent (``n / (n_pulses p_k)``, the basis-choice probabilities included);
    ``error_rate_test[k] = m_test[k] / n_test[k]`` (NaN without detections); ``qber_test``: the
    X error rate over all intensities. Lower bounds (Lim 2014 Eqs. (2), (3)) on the number of
    key-basis detections from vacuum (``s_key_0``) and single-photon pulses (``s_key_1``), and
    on the test-basis single-photon detections (``s_test_1``); ``phase_error``: upper bound on
    the phase-error rate of the key's single-photon bits (Eqs. (4), (5)), capped at 1/2.
    ``qber_key``: errors / bits of the disclosed key-basis sample, ``qber_key_upper`` its bound
    for the undisclosed key bits (:func:`qber_upper_bound`); both ``None`` without a sample.
    """
    n_pulses: int
    n_key: tuple[int, int, int]
    n_test: tuple[int, int, int]
    m_test: tuple[int, int, int]
    gain_key: tuple[float, float, float]
    gain_test: tuple[float, float, float]
    error_rate_test: tuple[float, float, float]
    qber_test: float
    s_key_0: float
    s_key_1: float
    s_test_1: float
    phase_error: float
    qber_key: float | None
    qber_key_upper: float | None
    qber_sample_bits: int
    qber_sample_errors: int
    mu: tuple[float, float, float]
    p: tuple[float, float, float]
    eps_sec: float
    qber_eps: float | None = None

    @property
    def n_key_total(self) -> int:
        return sum(self.n_key)

    def as_dict(self) -> dict:
        """JSON-ready dict (tuples as lists, NaN as ``None``)."""
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, (tuple, list)):
                return [clean(x) for x in v]
            return v
        return {k: clean(v) for k, v in asdict(self).items()}


def estimate(counts: ObservedCounts, *, mu, p, eps_sec: float, qber_sample: tuple[int, int] | None = None,
             qber_abort: float = 0.11, qber_eps: float | None = None) -> Estimate:
    """Bound the block's vacuum and single-photon key bits and their phase error (Lim 2014, via
    :func:`qkdlink.host.theory.lim2014_from_counts`), and the key-basis QBER from a sample.

    ``mu``, ``p``: intensities (photons/pulse) and their probabilities, (signal, decoy,
    vacuum); ``eps_sec``: secrecy parameter, split as in the module docstring. ``qber_sample``:
    ``(errors, sample_bits)`` of the disclosed key-basis sample (:func:`sample_for_qber`); its
    bound uses ``qber_eps`` (default ``eps_sec``), which is not part of ``eps_sec`` (module
    docstring).

    Raises :class:`EstimationAbort` (no key possible) when the key basis is empty, the test
    basis is empty, ``s_key_1 <= 0``, ``phase_error >= 1/2``, the sample covers every key bit,
    or ``qber_key_upper > qber_abort``; ``ValueError`` for malformed input.
    """
    if not isinstance(counts, ObservedCounts):
        raise ValueError(f"counts: must be an ObservedCounts, got {type(counts).__name__}")
    mu_t, p_t, eps = _validate_protocol(mu, p, eps_sec)
    qa = float(qber_abort)
    if not 0.0 <= qa <= 0.5:
        raise ValueError(f"qber_abort = {qber_abort!r}: must be in [0, 0.5]")
    q_eps = eps if qber_eps is None else float(qber_eps)
    if not 0.0 < q_eps < 1.0:
        raise ValueError(f"qber_eps = {qber_eps!r}: must be in (0, 1)")
    nz, nx, mx = counts.n_key, counts.n_test, counts.m_test
    N = counts.n_pulses
    nz_tot, nx_tot = sum(nz), sum(nx)

    k_bits = k_err = 0
    if qber_sample is not None:
        try:
            k_err, k_bits = qber_sample
        except (TypeError, ValueError):
            raise ValueError(f"qber_sample = {qber_sample!r}: must be (errors, sample_bits)") from None
        k_err, k_bits = _count("qber_sample errors", k_err), _count("qber_sample sample_bits", k_bits)
        if k_bits < 1:
            raise ValueError(f"qber_sample sample_bits = {k_bits}: must be >= 1 (pass None for no sample)")
        if k_err > k_bits:
            raise ValueError(f"qber_sample errors = {k_err}: more than the {k_bits} sampled bits")
        if k_bits > nz_tot:
            raise ValueError(f"qber_sample sample_bits = {k_bits}: more than the {nz_tot} key-basis bits")

    if nz_tot == 0:
        raise EstimationAbort(f"no key-basis (Z) detections in {N} pulses: empty key")
    if nx_tot == 0:
        raise EstimationAbort(f"no test-basis (X) detections in {N} pulses ({nz_tot} key-basis): "
                              "phase error cannot be bounded")
    if qber_sample is not None and k_bits >= nz_tot:
        raise EstimationAbort(f"QBER sample of {k_bits} bits covers all {nz_tot} key-basis bits: no key left")

    b = theory.lim2014_from_counts(nz, nx, mx, N, mu_t, p_t, lambda_ec_bits=0.0, eps_sec=eps)
    gain_key = tuple(nz[k] / (N * p_t[k]) for k in range(3))
    gain_test = tuple(nx[k] / (N * p_t[k]) for k in range(3))
    e_test = tuple(mx[k] / nx[k] if nx[k] else math.nan for k in range(3))
    qber_test = sum(mx) / nx_tot

    qk = qku = None
    if qber_sample is not None:
        qk = k_err / k_bits
        qku = qber_upper_bound(k_err, k_bits, nz_tot, q_eps)

    est = Estimate(n_pulses=N, n_key=nz, n_test=nx, m_test=mx, gain_key=gain_key, gain_test=gain_test,
                   error_rate_test=e_test, qber_test=qber_test, s_key_0=b["s_key_0"], s_key_1=b["s_key_1"],
                   s_test_1=b["s_test_1"], phase_error=b["phase_error"], qber_key=qk, qber_key_upper=qku,
                   qber_sample_bits=k_bits, qber_sample_errors=k_err, mu=mu_t, p=p_t, eps_sec=eps,
                   qber_eps=q_eps if qber_sample is not None else None)

    if not est.s_key_1 > 0.0:
        raise EstimationAbort(f"single-photon key bits s_key_1 <= 0 (lower bound {est.s_key_1:.6g}; key basis "
                              f"{list(nz)}, test basis {list(nx)} per intensity, {N} pulses): decoy statistics "
                              "leave no single-photon key")
    if est.s_test_1 <= 0.0 or est.phase_error >= 0.5:
        raise EstimationAbort(f"phase error bound {est.phase_error:.6g} >= 0.5 (test-basis single photons "
                              f"s_test_1 = {est.s_test_1:.6g}, X errors {list(mx)} of {list(nx)}): no secrecy")
    if qku is not None and qku > qa:
        raise EstimationAbort(f"key-basis QBER upper bound {qku:.6g} > qber_abort {qa:g} ({k_err} errors in "
                              f"{k_bits} sampled bits, observed {qk:.6g}, eps {q_eps:g})")
    return est


def estimate_from_config(counts: ObservedCounts, cfg, *, qber_sample: tuple[int, int] | None = None,
                         qber_eps: float | None = None) -> Estimate:
    """:func:`estimate` with ``mu``, ``p``, ``eps_sec`` and ``qber_abort`` from a ``LinkConfig``
    (``source.mu_*``, ``source.p_*``, ``postprocessing.eps_sec``, ``postprocessing.qber_abort``)."""
    s, pp = cfg.source, cfg.postprocessing
    return estimate(counts, mu=(s.mu_signal, s.mu_decoy, s.mu_vacuum), p=(s.p_signal, s.p_decoy, s.p_vacuum),
                    eps_sec=pp.eps_sec, qber_sample=qber_sample, qber_abort=pp.qber_abort, qber_eps=qber_eps)


# --------------------------------------------------------------------------- key length

def security_bits(eps_sec: float, eps_cor: float) -> float:
    """Lim 2014 Eq. (1)'s constant ``6 log2(21/eps_sec) + log2(2/eps_cor)`` in bits (smoothing,
    privacy amplification and the verification allowance; see the module docstring)."""
    return 6.0 * math.log2(21.0 / eps_sec) + math.log2(2.0 / eps_cor)


@dataclass(frozen=True)
class KeyLength:
    """The key-length ledger of one block, every term in bits:

    ``length_bits = floor(s_key_0 + s_key_1_times_1_minus_h_phase - leaked_ec_bits - sampled_bits
    - verification_bits - security_bits)``, ``> 0``. ``unrounded_bits`` is the value before the
    floor.
    """
    length_bits: int
    s_key_0: float
    s_key_1_times_1_minus_h_phase: float
    leaked_ec_bits: int
    sampled_bits: int
    verification_bits: int
    security_bits: float
    unrounded_bits: float
    eps_sec: float
    eps_cor: float

    def as_dict(self) -> dict:
        return asdict(self)


def secret_key_length(est: Estimate, *, leaked_ec_bits: int, sampled_bits: int, verification_bits: int,
                      eps_sec: float, eps_cor: float) -> KeyLength:
    """Length of the ``eps_sec``-secret, ``eps_cor``-correct key of the block, Lim 2014 Eq. (1)::

        l = floor(s_Z0 + s_Z1 (1 - h(phi_Z)) - lambda_EC - k - t - 6 log2(21/eps_sec) - log2(2/eps_cor))

    ``leaked_ec_bits`` (``lambda_EC``): every bit error correction disclosed, counted by the
    reconciliation (not ``f h(Q)``); ``verification_bits`` (``t``): the verification tag sent
    (``host/verify.py``). Lim's ``log2(2/eps_cor)`` is their allowance for that tag, so the tag
    is counted twice — conservative by at most ``log2(2/eps_cor) + 1`` bits per block, and a tag
    longer than the allowance stays covered. ``sampled_bits`` (``k``): the key-basis bits
    disclosed for the QBER estimate and dropped from the key.

    Why subtracting ``k`` is sound: the key is the ``n_Z - k`` undisclosed Z bits ``R``. (i)
    ``R`` lacks at most ``k`` of the block's vacuum and single-photon detections, and at a fixed
    phase-error count ``c`` the single-photon entropy ``s (1 - h(c/s))`` has slope
    ``1 + log2(1 - c/s)``, in [0, 1] for ``c/s <= 1/2``, in ``s``; so ``R``'s min-entropy
    bound is at least the block's minus ``k``. Equivalently for Alice's disclosed bits ``X_S``,
    the chain rule for a classical register ``H_min(X_R | E X_S) >= H_min(X_R X_S | E) - k``
    (guessing ``X_S`` at random, ``P_guess(X_R X_S | E) >= 2^-k P_guess(X_R | E X_S)``; smooth
    versions: Vitanov, Dupuis, Tomamichel, Renner, IEEE Trans. Inf. Theory 59, 2603 (2013), the
    chain rules Lim 2014 uses). (ii) The disclosed sample of both ends
    lies outside ``R``: like the test-basis bits Lim et al. announce, it is part of the
    adversary's side information in the entropic uncertainty relation, at no further cost.

    ``eps_sec`` must be the one the estimate used (its Hoeffding and sampling terms are shares
    of it); ``sampled_bits`` at least the estimate's sample. Raises :class:`EstimationAbort`
    if the length is not positive.
    """
    if not isinstance(est, Estimate):
        raise ValueError(f"est: must be an Estimate, got {type(est).__name__}")
    leak = _count("leaked_ec_bits", leaked_ec_bits)
    k = _count("sampled_bits", sampled_bits)
    t = _count("verification_bits", verification_bits)
    e_sec, e_cor = float(eps_sec), float(eps_cor)
    if not 0.0 < e_sec < 1.0:
        raise ValueError(f"eps_sec = {eps_sec!r}: must be in (0, 1)")
    if not 0.0 < e_cor < 1.0:
        raise ValueError(f"eps_cor = {eps_cor!r}: must be in (0, 1)")
    if e_sec != est.eps_sec:
        raise ValueError(f"eps_sec = {e_sec!r} differs from the estimate's eps_sec = {est.eps_sec!r}: its "
                         "bounds spend shares of that epsilon")
    if k < est.qber_sample_bits:
        raise ValueError(f"sampled_bits = {k}: less than the {est.qber_sample_bits} bits of the estimate's "
                         "QBER sample, which were disclosed")
    if k > est.n_key_total:
        raise ValueError(f"sampled_bits = {k}: more than the {est.n_key_total} key-basis bits")
    single = est.s_key_1 * (1.0 - float(theory.binary_entropy(est.phase_error)))
    const = security_bits(e_sec, e_cor)
    ell = est.s_key_0 + single - leak - k - t - const
    kl = KeyLength(length_bits=int(math.floor(ell)) if math.isfinite(ell) else 0, s_key_0=est.s_key_0,
                   s_key_1_times_1_minus_h_phase=single, leaked_ec_bits=leak, sampled_bits=k,
                   verification_bits=t, security_bits=const, unrounded_bits=ell, eps_sec=e_sec, eps_cor=e_cor)
    if kl.length_bits <= 0:
        raise EstimationAbort(f"key length {ell:.6g} bits <= 0: s_key_0 {est.s_key_0:.6g} + s_key_1 (1 - h(phase)) "
                              f"{single:.6g} - leaked_ec {leak} - sampled {k} - verification {t} - security "
                              f"{const:.6g}")
    return kl
