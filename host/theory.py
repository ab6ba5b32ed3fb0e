"""Secret key rate of decoy-state BB84 over fibre: expected observables, key rate bounds,
parameter optimisation and maximum distance.

Small pure functions, vectorised over numpy arrays of transmittance (hence of distance); the
formula's source is in each docstring. Rates are **secret bits per sent pulse**; multiply by
the pulse rate (``cfg.gateware.pulse_rate_mhz``) for bit/s. See ``docs/keyrate.md``.

Channel and device model (the standard decoy model of Lo, Ma, Chen, PRL 94, 230504 (2005) and
Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), "Ma 2005" below):

* total transmittance ``eta = 10^(-(alpha L + connector loss)/10) * eta_Bob``, Bob's optics
  and detector efficiency included;
* an ``n``-photon pulse is detected with yield ``Y_n = 1 - (1 - Y0)(1 - eta)^n`` (Ma 2005
  writes ``Y_n ~ Y0 + eta_n``; the exact product form keeps ``Q_mu <= 1``) and gives an
  error with probability ``e_n Y_n = e0 Y0 + e_d (Y_n - Y0)``, ``e0 = 1/2`` for background
  clicks and ``e_d`` the misalignment ("e_detector");
* a Poisson source, so ``Q_mu = sum_n e^-mu mu^n/n! Y_n = 1 - (1 - Y0) e^(-eta mu)``.

**Background yield convention.** ``Y0`` is the probability that Bob's receiver registers a
detection in a slot when the vacuum was sent (Ma 2005's definition of the background rate).
Each gated threshold detector fires in the dark with ``dark_count_per_gate``, so
``Y0 = 1 - (1 - p_dark)^n_det``. Our receiver has **four** detectors behind a passive basis
splitter (``docs/receiver.md``, ``hdl/detection.py``): every gate of all four counts, and a
dark click in either basis is a detection that survives sifting with probability 1/2, exactly
like a photon click. Hence ``n_det = 4`` (``Y0 ~ 4 p_dark``) for this hardware; an
active-basis receiver with two detectors has ``n_det = 2`` (``Y0 ~ 2 p_dark``), the convention
of Lim et al. 2014 (their ``1 - (1 - 2 p_dc) e^(-eta k)``) and of Ma 2005's GYS ``Y0 = 1.7e-6``.

Protocol families (``METHODS``):

``gllp-decoy``        GLLP rate with the exact single-photon gain and error (infinitely many
                      decoys), Ma 2005 Eq. (1) with Lo-Ma-Chen 2005.
``vacuum-weak-decoy`` Ma 2005's two-decoy (vacuum + weak) lower bound on ``Y1`` and upper
                      bound on ``e1``, asymptotic.
``finite-lim2014``    Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014): two decoys,
                      Hoeffding bounds, composable finite key of a block of ``N`` pulses.
``no-decoy``          GLLP without decoys: every multi-photon pulse is assumed tagged
                      (Gottesman, Lo, Lütkenhaus, Preskill, QIC 4, 325 (2004)).
``plob``              The repeaterless bound ``-log2(1 - eta)`` (Pirandola, Laurenza,
                      Ottaviani, Banchi, Nat. Commun. 8, 15043 (2017)).

Asymptotic rates follow Ma 2005: the decoy pulses are a vanishing fraction, so the rate per
sent pulse is the rate per signal pulse and ``p_signal``/``p_decoy``/``p_vacuum`` do not
enter. The finite-key rate counts every pulse, decoys included. ``sifting`` is the fraction
of detections whose bases agree and that are kept for the key: ``1/2`` for symmetric BB84,
``pA pB + (1 - pA)(1 - pB)`` with biased bases when both bases give key with the same error
rate (Lo, Chau, Ardehali, J. Cryptology 18, 133 (2005)).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import optimize as _opt

__all__ = [
    "METHODS", "METHOD_SOURCES", "GYS", "LinkModel", "ProtocolSettings",
    "binary_entropy", "transmittance", "background_yield", "plob_bound",
    "photon_yield", "gain", "error_rate", "y1", "e1",
    "decoy_bounds", "lim2014_bounds",
    "rate_gllp_infinite_decoy", "rate_vacuum_weak_decoy", "rate_finite_lim2014", "rate_no_decoy_gllp",
    "key_rate", "optimise", "max_distance_km", "keyrate_table", "link_from_config", "settings_from_config",
    "DEFAULT_F_EC", "DEFAULT_BOUNDS",
]

METHODS = ("gllp-decoy", "vacuum-weak-decoy", "finite-lim2014", "no-decoy", "plob")

METHOD_SOURCES = {
    "gllp-decoy": "GLLP with exact single-photon parameters (infinite decoys); Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005)",
    "vacuum-weak-decoy": "vacuum + weak decoy bounds; Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005)",
    "finite-lim2014": "finite key, two decoys; Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014)",
    "no-decoy": "GLLP without decoys, all multi-photon pulses tagged; Gottesman et al., QIC 4, 325 (2004)",
    "plob": "repeaterless bound -log2(1-eta); Pirandola et al., Nat. Commun. 8, 15043 (2017)",
}

#: Error-correction inefficiency f used when none is given: the value of Lim et al. 2014's
#: example; original Cascade reaches 1.13-1.18 at QBER 1-5 % (Martinez-Mateo et al. 2015).
DEFAULT_F_EC = 1.16

E0 = 0.5          # error rate of a background (dark) click
_LN2 = math.log(2.0)


# --------------------------------------------------------------------------- validation

def _check(name: str, value, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
           unit: str = ""):
    """Return ``value`` as a float array; ValueError naming ``name`` and its range otherwise."""
    arr = np.asarray(value, dtype=float)
    ok = np.isfinite(arr) | (np.isposinf(arr) & (hi == math.inf))
    ok &= (arr > lo) if lo_open else (arr >= lo)
    ok &= (arr < hi) if hi_open else (arr <= hi)
    if not np.all(ok):
        bad = arr[~ok].flat[0] if arr.ndim else float(arr)
        rng = ("(" if lo_open else "[") + f"{lo:g}, {hi:g}" + (")" if hi_open else "]")
        raise ValueError(f"{name} = {bad!r}: must be in {rng}" + (f" {unit}" if unit else ""))
    return arr


def _out(x):
    """numpy scalar -> float for scalar inputs, arrays unchanged."""
    x = np.asarray(x, dtype=float)
    return float(x) if x.ndim == 0 else x


# --------------------------------------------------------------------------- basics

def binary_entropy(p):
    """Binary Shannon entropy ``h(p) = -p log2 p - (1-p) log2 (1-p)`` in bits, ``h(0) = h(1) = 0``.

    ``p`` in [0, 1] (array or scalar).
    """
    p = _check("p", p, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -p * np.log2(p) - (1.0 - p) * np.log2(1.0 - p)
    return _out(np.where((p <= 0.0) | (p >= 1.0), 0.0, h))


def _h(p):
    """binary_entropy without validation, for internal use on clipped values."""
    p = np.clip(p, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -p * np.log2(p) - (1.0 - p) * np.log2(1.0 - p)
    return np.where((p <= 0.0) | (p >= 1.0), 0.0, h)


def transmittance(length_km, loss_db_per_km, connector_loss_db=0.0, detector_efficiency=1.0):
    """Total transmittance ``eta = 10^(-(loss_db_per_km * length_km + connector_loss_db)/10) * detector_efficiency``.

    Fibre attenuation in dB (Ma 2005, Sec. 2: ``eta = eta_Bob 10^(-alpha L/10)``) plus lumped
    connector/insertion losses; ``detector_efficiency`` is Bob's optics times detector
    efficiency (``eta_Bob``). Vectorised over ``length_km``.
    """
    L = _check("length_km", length_km, 0.0, 5000.0, unit="km")
    a = _check("loss_db_per_km", loss_db_per_km, 0.0, 10.0, unit="dB/km")
    c = _check("connector_loss_db", connector_loss_db, 0.0, 100.0, unit="dB")
    d = _check("detector_efficiency", detector_efficiency, 0.0, 1.0)
    return _out(10.0 ** (-(a * L + c) / 10.0) * d)


def background_yield(dark_count_per_gate, n_detectors: int = 4):
    """Background yield ``Y0 = 1 - (1 - p_dark)^n_detectors``: probability of a detection in a
    slot with vacuum input (Ma 2005's background rate ``Y0``).

    ``n_detectors = 4`` for our passive-basis receiver (see the module docstring);
    ``2`` for an active-basis receiver, as in Lim et al. 2014 (``Y0 ~ 2 p_dc``).
    """
    p = _check("dark_count_per_gate", dark_count_per_gate, 0.0, 0.1)
    if n_detectors not in (1, 2, 4):
        raise ValueError(f"n_detectors = {n_detectors!r}: must be one of 1, 2, 4")
    return _out(1.0 - (1.0 - p) ** n_detectors)


def plob_bound(eta):
    """Repeaterless secret-key capacity of a pure-loss channel, ``-log2(1 - eta)`` bits per use
    (Pirandola, Laurenza, Ottaviani, Banchi, Nat. Commun. 8, 15043 (2017)).

    Applied here to the total transmittance including Bob's detector efficiency (a uniform
    detector loss commutes into the channel), which gives the tighter bound.
    """
    eta = _check("eta", eta, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        return _out(-np.log2(1.0 - eta))


# --------------------------------------------------------------------------- observables

def _observables_checked(mu, eta, y0):
    return (_check("mu", mu, 0.0, 10.0, unit="photons/pulse"), _check("eta", eta, 0.0, 1.0),
            _check("y0", y0, 0.0, 1.0, hi_open=True))


def photon_yield(n: int, eta, y0):
    """Yield of an ``n``-photon pulse, ``Y_n = 1 - (1 - Y0)(1 - eta)^n``.

    Ma 2005, Sec. 2 (``Y_n ~ Y0 + eta_n``, ``eta_n = 1 - (1 - eta)^n``) without dropping the
    ``Y0 eta_n`` coincidence term; Poisson-averaging gives :func:`gain` exactly.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 0):
        raise ValueError(f"n = {n!r}: must be an integer >= 0")
    eta = _check("eta", eta, 0.0, 1.0)
    y0 = _check("y0", y0, 0.0, 1.0, hi_open=True)
    return _out(1.0 - (1.0 - y0) * (1.0 - eta) ** n)


def _gain(mu, eta, y0):
    return 1.0 - (1.0 - y0) * np.exp(-eta * mu)


def _errors(mu, eta, y0, e_d):
    """``E_mu Q_mu``: probability of a detection with a bit error."""
    return E0 * y0 + e_d * (1.0 - y0) * (1.0 - np.exp(-eta * mu))


def gain(mu, eta, y0):
    """Overall gain of a weak coherent pulse of mean photon number ``mu``:
    ``Q_mu = 1 - (1 - Y0) exp(-eta mu)`` (Ma 2005 Eq. (10), ``Q_mu ~ Y0 + 1 - e^(-eta mu)``)."""
    mu, eta, y0 = _observables_checked(mu, eta, y0)
    return _out(_gain(mu, eta, y0))


def error_rate(mu, eta, y0, e_detector):
    """Overall QBER ``E_mu = [e0 Y0 + e_d (1 - Y0)(1 - exp(-eta mu))] / Q_mu``, ``e0 = 1/2``
    (Ma 2005 Eq. (11))."""
    mu, eta, y0 = _observables_checked(mu, eta, y0)
    e_d = _check("e_detector", e_detector, 0.0, 0.5)
    q = _gain(mu, eta, y0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _out(np.where(q > 0, _errors(mu, eta, y0, e_d) / np.where(q > 0, q, 1.0), E0))


def y1(eta, y0):
    """Single-photon yield ``Y1 = Y0 + eta - Y0 eta`` (:func:`photon_yield` with n = 1; Ma 2005, Sec. 2)."""
    return photon_yield(1, eta, y0)


def e1(eta, y0, e_detector):
    """Single-photon error rate ``e1 = [e0 Y0 + e_d (1 - Y0) eta] / Y1`` (Ma 2005, Sec. 2, ``e0 = 1/2``)."""
    eta = _check("eta", eta, 0.0, 1.0)
    y0 = _check("y0", y0, 0.0, 1.0, hi_open=True)
    e_d = _check("e_detector", e_detector, 0.0, 0.5)
    yy = 1.0 - (1.0 - y0) * (1.0 - eta)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _out(np.where(yy > 0, (E0 * y0 + e_d * (1.0 - y0) * eta) / np.where(yy > 0, yy, 1.0), E0))


def _validate_device(eta, y0, e_detector, f_ec, sifting):
    return (_check("eta", eta, 0.0, 1.0), _check("y0", y0, 0.0, 1.0, hi_open=True),
            _check("e_detector", e_detector, 0.0, 0.5), _check("f_ec", f_ec, 1.0, 3.0),
            _check("sifting", sifting, 0.0, 1.0, lo_open=True))


# --------------------------------------------------------------------------- decoy estimates

def decoy_bounds(mu, nu, mu_vacuum, q_mu, q_nu, q_vac, eq_nu, eq_vac):
    """Lower bounds on ``Y0`` and ``Y1`` and upper bound on ``e1`` from measured gains ``Q`` and
    error gains ``EQ = E*Q`` of the signal ``mu``, weak decoy ``nu`` and (near-)vacuum decoy.

    Ma 2005, Sec. 3 (two decoys ``nu1 = nu``, ``nu2 = mu_vacuum``, valid for
    ``0 <= nu2 < nu1``, ``nu1 + nu2 < mu``)::

        Y0_L = max(0, (nu1 Q_nu2 e^nu2 - nu2 Q_nu1 e^nu1) / (nu1 - nu2))
        Y1_L = mu / (mu nu1 - mu nu2 - nu1^2 + nu2^2)
               * [Q_nu1 e^nu1 - Q_nu2 e^nu2 - (nu1^2 - nu2^2)/mu^2 (Q_mu e^mu - Y0_L)]
        e1_U = (E_nu1 Q_nu1 e^nu1 - E_nu2 Q_nu2 e^nu2) / ((nu1 - nu2) Y1_L)

    With a true vacuum (``nu2 = 0``, ``Q_0 = Y0``, ``E_0 Q_0 = e0 Y0``) these are Ma 2005's
    vacuum + weak decoy bounds. ``Y1_L`` is clipped at 0 and ``e1_U`` to [0, 1/2].
    Returns ``(y0_lower, y1_lower, e1_upper)``.
    """
    nu1, nu2 = float(nu), float(mu_vacuum)
    _check_decoy_intensities(float(mu), nu1, nu2)
    return tuple(_out(x) for x in _decoy_bounds_core(float(mu), nu1, nu2, q_mu, q_nu, q_vac, eq_nu, eq_vac))


def _decoy_bounds_core(mu, nu1, nu2, q_mu, q_nu, q_vac, eq_nu, eq_vac):
    ex1, ex2, exm = math.exp(nu1), math.exp(nu2), math.exp(mu)
    q_mu, q_nu, q_vac = np.asarray(q_mu, float), np.asarray(q_nu, float), np.asarray(q_vac, float)
    y0l = np.maximum(0.0, (nu1 * q_vac * ex2 - nu2 * q_nu * ex1) / (nu1 - nu2))
    den = mu * nu1 - mu * nu2 - nu1 ** 2 + nu2 ** 2
    y1l = mu / den * (q_nu * ex1 - q_vac * ex2 - (nu1 ** 2 - nu2 ** 2) / mu ** 2 * (q_mu * exm - y0l))
    y1l = np.maximum(y1l, 0.0)
    num = np.asarray(eq_nu, float) * ex1 - np.asarray(eq_vac, float) * ex2
    with np.errstate(divide="ignore", invalid="ignore"):
        e1u = np.where(y1l > 0, num / ((nu1 - nu2) * np.where(y1l > 0, y1l, 1.0)), E0)
    return y0l, y1l, np.clip(e1u, 0.0, E0)


def _check_decoy_intensities(mu, nu, mu_vacuum):
    _check("mu_signal", mu, 0.0, 10.0, lo_open=True, unit="photons/pulse")
    _check("mu_vacuum", mu_vacuum, 0.0, 0.1, unit="photons/pulse")
    _check("mu_decoy", nu, mu_vacuum, mu - mu_vacuum, lo_open=True, hi_open=True, unit="photons/pulse"
           " (mu_vacuum < mu_decoy < mu_signal - mu_vacuum)")


# --------------------------------------------------------------------------- asymptotic rates

def _gllp_raw(eta, y0, e_d, mu, f_ec, sifting, include_vacuum):
    q, eq = _gain(mu, eta, y0), _errors(mu, eta, y0, e_d)
    e = np.where(q > 0, eq / np.where(q > 0, q, 1.0), E0)
    yy = 1.0 - (1.0 - y0) * (1.0 - eta)
    e1_ = np.where(yy > 0, (E0 * y0 + e_d * (1.0 - y0) * eta) / np.where(yy > 0, yy, 1.0), E0)
    q1 = yy * mu * np.exp(-mu)
    r = q1 * (1.0 - _h(np.minimum(e1_, E0))) - f_ec * q * _h(e)
    if include_vacuum:
        r = r + y0 * np.exp(-mu)
    return sifting * r


def rate_gllp_infinite_decoy(eta, y0, e_detector, mu, f_ec=DEFAULT_F_EC, sifting=0.5, include_vacuum=False):
    """Asymptotic key per pulse with the exact single-photon gain and error (infinitely many decoys):

    ``R = q { -f Q_mu h(E_mu) + Q1 [1 - h(e1)] }``, ``Q1 = Y1 mu e^-mu``
    (GLLP; Lo, Ma, Chen, PRL 94, 230504 (2005); Ma 2005 Eq. (1)), ``q = sifting``.
    ``include_vacuum`` adds the vacuum term ``Q0 = Y0 e^-mu`` (Lo 2005), off as in Ma 2005.
    Returns ``max(R, 0)``.
    """
    eta, y0, e_d, f, q = _validate_device(eta, y0, e_detector, f_ec, sifting)
    mu = _check("mu", mu, 0.0, 10.0, lo_open=True, unit="photons/pulse")
    return _out(np.maximum(_gllp_raw(eta, y0, e_d, mu, f, q, include_vacuum), 0.0))


def _vw_raw(eta, y0, e_d, mu, nu, mu_vac, f_ec, sifting, include_vacuum):
    q_mu, q_nu, q_v = _gain(mu, eta, y0), _gain(nu, eta, y0), _gain(mu_vac, eta, y0)
    eq_mu, eq_nu, eq_v = _errors(mu, eta, y0, e_d), _errors(nu, eta, y0, e_d), _errors(mu_vac, eta, y0, e_d)
    y0l, y1l, e1u = _decoy_bounds_core(mu, nu, mu_vac, q_mu, q_nu, q_v, eq_nu, eq_v)
    e_mu = np.where(q_mu > 0, eq_mu / np.where(q_mu > 0, q_mu, 1.0), E0)
    r = np.asarray(y1l) * mu * math.exp(-mu) * (1.0 - _h(np.asarray(e1u))) - f_ec * q_mu * _h(e_mu)
    if include_vacuum:
        r = r + np.asarray(y0l) * math.exp(-mu)
    return sifting * r


def rate_vacuum_weak_decoy(eta, y0, e_detector, mu, nu, mu_vacuum=0.0, f_ec=DEFAULT_F_EC, sifting=0.5,
                           include_vacuum=False):
    """Asymptotic key per pulse of the vacuum + weak decoy protocol (Ma, Qi, Zhao, Lo,
    PRA 72, 012326 (2005)): the GLLP rate ``q { -f Q_mu h(E_mu) + Q1_L [1 - h(e1_U)] }`` with
    ``Q1_L = Y1_L mu e^-mu`` and ``Y1_L``, ``e1_U`` from :func:`decoy_bounds` applied to the
    expected gains of the signal ``mu``, the weak decoy ``nu`` and the vacuum decoy
    ``mu_vacuum`` (0 for Ma's protocol; a small value models finite extinction with Ma's
    general two-decoy bounds). Returns ``max(R, 0)``.
    """
    eta, y0, e_d, f, q = _validate_device(eta, y0, e_detector, f_ec, sifting)
    _check_decoy_intensities(float(mu), float(nu), float(mu_vacuum))
    return _out(np.maximum(_vw_raw(eta, y0, e_d, float(mu), float(nu), float(mu_vacuum), f, q,
                                   include_vacuum), 0.0))


def _nodecoy_raw(eta, y0, e_d, mu, f_ec, sifting):
    q, eq = _gain(mu, eta, y0), _errors(mu, eta, y0, e_d)
    e = np.where(q > 0, eq / np.where(q > 0, q, 1.0), E0)
    p_multi = 1.0 - np.exp(-mu) - mu * np.exp(-mu)
    with np.errstate(divide="ignore", invalid="ignore"):
        untagged = np.maximum(1.0 - p_multi / np.where(q > 0, q, 1.0), 0.0)      # 1 - Delta
        e_untagged = np.where(untagged > 0, e / np.where(untagged > 0, untagged, 1.0), E0)
    return sifting * q * (untagged * (1.0 - _h(np.minimum(e_untagged, E0))) - f_ec * _h(e))


def rate_no_decoy_gllp(eta, y0, e_detector, mu, f_ec=DEFAULT_F_EC, sifting=0.5):
    """Asymptotic key per pulse without decoys, all multi-photon pulses counted as tagged
    (Gottesman, Lo, Lütkenhaus, Preskill, QIC 4, 325 (2004), as written in Lo, Ma, Chen 2005):

    ``R = q Q_mu { (1 - Delta) [1 - h(E_mu / (1 - Delta))] - f h(E_mu) }``,
    ``Delta = P_multi(mu) / Q_mu``, ``P_multi = 1 - (1 + mu) e^-mu``.
    The optimum ``mu`` is of order ``eta`` (see :func:`optimise`). Returns ``max(R, 0)``.
    """
    eta, y0, e_d, f, q = _validate_device(eta, y0, e_detector, f_ec, sifting)
    mu = _check("mu", mu, 0.0, 10.0, lo_open=True, unit="photons/pulse")
    return _out(np.maximum(_nodecoy_raw(eta, y0, e_d, mu, f, q), 0.0))


# --------------------------------------------------------------------------- finite key (Lim 2014)

def _lim_gamma(eps_sec, b, c_per_n, d_per_n, n_pulses):
    """Lim 2014's random-sampling correction
    ``gamma(a, b, c, d) = sqrt((c+d)(1-b) b / (c d ln 2) * log2((c+d)/(c d (1-b) b) * 21^2/a^2))``
    with ``c = N c'``, ``d = N d'`` (counts per pulse times N); 0 for ``N = inf``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.clip(b, 1e-12, 0.5)
        ratio = (c_per_n + d_per_n) / (c_per_n * d_per_n * n_pulses)       # (c + d) / (c d)
        inner = np.log2(ratio / ((1.0 - b) * b) * 21.0 ** 2 / eps_sec ** 2)
        g = np.sqrt(ratio * (1.0 - b) * b / _LN2 * np.maximum(inner, 0.0))
    ok = (c_per_n > 0) & (d_per_n > 0)
    return np.where(ok & np.isfinite(g), g, np.where(np.isinf(n_pulses), 0.0, np.inf))


def _lim_decoy(nz_k, nx_k, mx_k, N, mus, ps, eps_sec):
    """Lim 2014's decoy bounds from per-pulse counts per intensity (shape (3, ...)) over ``N``
    pulses: ``(s_Z0, s_Z1, s_X1, phi_Z)`` per pulse (see :func:`lim2014_bounds`)."""
    mu1, mu2, mu3 = (float(x) for x in mus)
    mus, ps = np.asarray(mus, dtype=float), np.asarray(ps, dtype=float)
    shape = (3,) + (1,) * (np.ndim(nz_k) - 1)
    mus_b, ps_b = mus.reshape(shape), ps.reshape(shape)
    inv_n = np.where(np.isinf(N), 0.0, 1.0 / N)
    ln21 = math.log(21.0 / eps_sec)

    def pm(counts_k):
        """(n+_k, n-_k) per pulse, Hoeffding deviation of the basis total."""
        dev = np.sqrt(counts_k.sum(0) * inv_n / 2.0 * ln21)
        scale = np.exp(mus_b) / ps_b
        return scale * (counts_k + dev), scale * (counts_k - dev)

    tau0 = float(np.sum(ps * np.exp(-mus)))
    tau1 = float(np.sum(ps * np.exp(-mus) * mus))

    def s01(counts_k):
        up, lo = pm(counts_k)
        s0 = tau0 * (mu2 * lo[2] - mu3 * up[1]) / (mu2 - mu3)
        s0 = np.maximum(s0, 0.0)
        s1 = tau1 * mu1 * (lo[1] - up[2] - (mu2 ** 2 - mu3 ** 2) / mu1 ** 2 * (up[0] - s0 / tau0)) \
            / (mu1 * (mu2 - mu3) - mu2 ** 2 + mu3 ** 2)
        return s0, np.maximum(s1, 0.0)

    sz0, sz1 = s01(nz_k)
    _, sx1 = s01(nx_k)
    mx_up, mx_lo = pm(mx_k)
    vx1 = tau1 * (mx_up[1] - mx_lo[2]) / (mu2 - mu3)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sx1 > 0, vx1 / np.where(sx1 > 0, sx1, 1.0), E0)
    phi = np.minimum(ratio + _lim_gamma(eps_sec, ratio, sx1, sz1, N), E0)
    phi = np.where(sx1 > 0, phi, E0)
    return sz0, sz1, sx1, phi


def lim2014_from_counts(n_key_k, n_test_k, m_test_k, n_pulses, mu, p, *, lambda_ec_bits,
                        eps_sec=1e-9, eps_cor=1e-15) -> dict:
    """Lim 2014's key length from *observed* counts of one block (parameter estimation).

    ``n_key_k``: key-basis (Z) detections per intensity (signal, decoy, vacuum); ``n_test_k``,
    ``m_test_k``: test-basis (X) detections and errors per intensity; ``n_pulses``: pulses
    sent in the block; ``lambda_ec_bits``: bits actually disclosed by error correction and
    verification. Returns ``s_key_0``, ``s_key_1``, ``s_test_1`` (bits), ``phase_error``,
    ``length_bits`` (``floor(l)``, may be <= 0: no key) and the security constant.
    """
    N = float(n_pulses)
    if not N > 0:
        raise ValueError(f"n_pulses = {n_pulses!r}: must be > 0")
    arrays = [np.asarray(a, dtype=float).reshape(3) / N for a in (n_key_k, n_test_k, m_test_k)]
    if any((a < 0).any() for a in arrays):
        raise ValueError("counts must be >= 0")
    sz0, sz1, sx1, phi = _lim_decoy(*arrays, np.float64(N), mu, p, eps_sec)
    const = 6.0 * math.log2(21.0 / eps_sec) + math.log2(2.0 / eps_cor)
    ell = sz0 * N + sz1 * N * (1.0 - _h(phi)) - float(lambda_ec_bits) - const
    return dict(s_key_0=float(sz0 * N), s_key_1=float(sz1 * N), s_test_1=float(sx1 * N),
                phase_error=float(phi), security_bits=const,
                length_bits=int(math.floor(ell)) if math.isfinite(ell) else 0)


def lim2014_bounds(eta, y0, e_detector, mu=(0.5, 0.1, 0.0), p=(0.7, 0.2, 0.1), p_z=0.5, *,
                   f_ec=DEFAULT_F_EC, eps_sec=1e-9, eps_cor=1e-15, n_pulses=None, n_key_sifted=None,
                   p_z_bob=None) -> dict:
    """Every quantity of Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014) for a block,
    with the observed counts replaced by their expected values (as in the paper's simulations).

    Three intensities ``mu1 > mu2 + mu3``, ``mu2 > mu3 >= 0`` sent with probabilities ``p``;
    the key comes from the Z basis (Lim et al. call it X), chosen with probability ``p_z``
    by Alice and ``p_z_bob`` (default ``p_z``) by Bob; the X basis is the test basis.
    The block is ``n_pulses`` sent pulses, or, with ``n_key_sifted``, as many pulses as give that
    many expected key-basis detections (their ``n_X``, the post-processing block). All counts
    are handled per pulse, so ``n_pulses = inf`` gives the asymptotic limit of the bounds.

    With ``n^{+-}_{B,k} = e^{mu_k}/p_k [n_{B,k} +- sqrt(n_B/2 ln(21/eps_sec))]`` (Hoeffding) and
    ``tau_n = sum_k p_k e^{-mu_k} mu_k^n / n!``::

        s_{B,0} >= tau_0 (mu2 n-_{B,mu3} - mu3 n+_{B,mu2}) / (mu2 - mu3)
        s_{B,1} >= tau_1 mu1 [n-_{B,mu2} - n+_{B,mu3} - (mu2^2 - mu3^2)/mu1^2 (n+_{B,mu1} - s_{B,0}/tau_0)]
                   / (mu1 (mu2 - mu3) - mu2^2 + mu3^2)
        v_{X,1} <= tau_1 (m+_{X,mu2} - m-_{X,mu3}) / (mu2 - mu3)
        phi_Z   <= v_{X,1}/s_{X,1} + gamma(eps_sec, v_{X,1}/s_{X,1}, s_{X,1}, s_{Z,1})
        l = s_{Z,0} + s_{Z,1} (1 - h(phi_Z)) - lambda_EC - 6 log2(21/eps_sec) - log2(2/eps_cor)

    ``lambda_EC = f n_Z h(E_Z)`` with ``E_Z`` the key-basis QBER over all intensities.
    Returns a dict of arrays: ``n_pulses``, ``n_key``, ``qber_key``, ``s_key_0``, ``s_key_1``,
    ``s_test_1``, ``phase_error``, ``lambda_ec``, ``length_bits`` (before the floor, may be
    negative) and ``rate_per_pulse = max(floor(l), 0) / N``.
    """
    eta, y0, e_d, f, _ = _validate_device(eta, y0, e_detector, f_ec, 0.5)
    mu1, mu2, mu3 = (float(x) for x in mu)
    p1, p2, p3 = (float(x) for x in p)
    _check("mu_vacuum", mu3, 0.0, 0.1, unit="photons/pulse")
    _check("mu_decoy", mu2, mu3, 10.0, lo_open=True, unit="photons/pulse (must exceed mu_vacuum)")
    _check("mu_signal", mu1, mu2 + mu3, 10.0, lo_open=True, unit="photons/pulse (must exceed mu_decoy + mu_vacuum)")
    for name, v in (("p_signal", p1), ("p_decoy", p2), ("p_vacuum", p3)):
        _check(name, v, 0.0, 1.0, lo_open=True)
    if abs(p1 + p2 + p3 - 1.0) > 1e-9:
        raise ValueError(f"p_signal + p_decoy + p_vacuum = {p1 + p2 + p3:.12g}: must sum to 1")
    pa = float(_check("p_z", p_z, 0.0, 1.0, lo_open=True, hi_open=True))
    pb = pa if p_z_bob is None else float(_check("p_z_bob", p_z_bob, 0.0, 1.0, lo_open=True, hi_open=True))
    eps_sec = float(_check("eps_sec", eps_sec, 0.0, 1.0, lo_open=True, hi_open=True))
    eps_cor = float(_check("eps_cor", eps_cor, 0.0, 1.0, lo_open=True, hi_open=True))
    if (n_pulses is None) == (n_key_sifted is None):
        raise ValueError("give exactly one of n_pulses (block size in sent pulses) and n_key_sifted")
    if n_pulses is not None:
        n_pulses = _check("n_pulses", n_pulses, 0.0, math.inf, lo_open=True)
    else:
        n_key_sifted = _check("n_key_sifted", n_key_sifted, 0.0, math.inf, lo_open=True)
    b = _lim_core(eta, y0, e_d, f, (mu1, mu2, mu3), (p1, p2, p3), pa, pb, eps_sec, eps_cor, n_pulses, n_key_sifted)
    return {k: _out(v) for k, v in b.items()}


def _lim_core(eta, y0, e_d, f, mu, p, pa, pb, eps_sec, eps_cor, n_pulses, n_key_sifted) -> dict:
    """lim2014_bounds without validation (arrays out)."""
    eta = np.asarray(eta, dtype=float)
    mu1, mu2, mu3 = mu
    mus, ps = np.array(mu, dtype=float), np.array(p, dtype=float)
    shape = (3,) + (1,) * eta.ndim
    mus_b, ps_b = mus.reshape(shape), ps.reshape(shape)
    q_k = _gain(mus_b, eta, y0)                          # (3, ...)
    eq_k = _errors(mus_b, eta, y0, e_d)
    key, test = pa * pb, (1.0 - pa) * (1.0 - pb)
    # per-pulse expected counts
    nz_k, mz_k = ps_b * key * q_k, ps_b * key * eq_k
    nx_k, mx_k = ps_b * test * q_k, ps_b * test * eq_k
    if n_pulses is not None:
        N = np.asarray(n_pulses, dtype=float) * np.ones_like(eta)
    else:
        nzt = nz_k.sum(0)
        N = np.where(nzt > 0, np.asarray(n_key_sifted, float) / np.where(nzt > 0, nzt, 1.0), np.inf)
    inv_n = np.where(np.isinf(N), 0.0, 1.0 / N)
    sz0, sz1, sx1, phi = _lim_decoy(nz_k, nx_k, mx_k, N, mus, ps, eps_sec)
    nz = nz_k.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        e_key = np.where(nz > 0, mz_k.sum(0) / np.where(nz > 0, nz, 1.0), E0)
    lam = f * nz * _h(e_key)
    const = 6.0 * math.log2(21.0 / eps_sec) + math.log2(2.0 / eps_cor)
    ell = sz0 + sz1 * (1.0 - _h(phi)) - lam - const * inv_n        # per pulse, before the floor
    finite = ~np.isinf(N)
    with np.errstate(invalid="ignore", over="ignore"):
        floored = np.where(finite, np.floor(ell * np.where(finite, N, 1.0)) * inv_n, ell)
    rate = np.maximum(floored, 0.0)
    with np.errstate(invalid="ignore"):
        return dict(n_pulses=N, n_key=nz * N, qber_key=e_key, s_key_0=sz0 * N, s_key_1=sz1 * N,
                    s_test_1=sx1 * N, phase_error=phi, lambda_ec=lam * N, length_bits=ell * N,
                    length_per_pulse=ell, rate_per_pulse=rate)


def rate_finite_lim2014(eta, y0, e_detector, mu=(0.5, 0.1, 0.0), p=(0.7, 0.2, 0.1), p_z=0.5, *,
                        f_ec=DEFAULT_F_EC, eps_sec=1e-9, eps_cor=1e-15, n_pulses=None, n_key_sifted=None,
                        p_z_bob=None):
    """Finite-key secret bits per sent pulse, ``max(floor(l), 0) / N``, of the two-decoy BB84
    protocol of Lim, Curty, Walenta, Xu, Zbinden, PRA 89, 022307 (2014) — see
    :func:`lim2014_bounds` for the formulas. ``eps_sec``-secret and ``eps_cor``-correct; the
    key basis is Z (probability ``p_z``), so at ``p_z = 1/2`` the large-block limit is half of
    the symmetric asymptotic rate.
    """
    return lim2014_bounds(eta, y0, e_detector, mu, p, p_z, f_ec=f_ec, eps_sec=eps_sec, eps_cor=eps_cor,
                          n_pulses=n_pulses, n_key_sifted=n_key_sifted, p_z_bob=p_z_bob)["rate_per_pulse"]


# --------------------------------------------------------------------------- link and protocol settings

@dataclass(frozen=True)
class LinkModel:
    """Fibre and receiver: everything the key rate needs except the protocol's own knobs."""
    loss_db_per_km: float = 0.2
    connector_loss_db: float = 0.0
    detector_efficiency: float = 0.1
    y0: float = 1.2e-6
    e_detector: float = 0.01
    f_ec: float = DEFAULT_F_EC

    def __post_init__(self):
        _check("loss_db_per_km", self.loss_db_per_km, 0.0, 10.0, unit="dB/km")
        _check("connector_loss_db", self.connector_loss_db, 0.0, 100.0, unit="dB")
        _check("detector_efficiency", self.detector_efficiency, 0.0, 1.0, lo_open=True)
        _check("y0", self.y0, 0.0, 1.0, hi_open=True)
        _check("e_detector", self.e_detector, 0.0, 0.5)
        _check("f_ec", self.f_ec, 1.0, 3.0)

    def eta(self, length_km):
        """Total transmittance at ``length_km`` (:func:`transmittance`)."""
        return transmittance(length_km, self.loss_db_per_km, self.connector_loss_db, self.detector_efficiency)


#: GYS experiment as tabulated by Ma, Qi, Zhao, Lo, PRA 72, 012326 (2005), Table I:
#: 1550 nm, alpha = 0.21 dB/km, e_detector = 3.3 %, Y0 = 1.7e-6, eta_Bob = 4.5 %, f(e) = 1.22.
GYS = LinkModel(loss_db_per_km=0.21, connector_loss_db=0.0, detector_efficiency=0.045, y0=1.7e-6,
                e_detector=0.033, f_ec=1.22)


@dataclass(frozen=True)
class ProtocolSettings:
    """The transmitter's knobs and the finite-key security parameters.

    ``n_pulses`` or ``n_key_sifted`` sets the finite-key block (``finite-lim2014`` only).
    ``p_z_bob`` is Bob's Z-basis probability (passive splitter ratio); ``None`` = matched to Alice.
    """
    mu_signal: float = 0.5
    mu_decoy: float = 0.1
    mu_vacuum: float = 0.0
    p_signal: float = 0.7
    p_decoy: float = 0.2
    p_vacuum: float = 0.1
    p_z_basis: float = 0.5
    eps_sec: float = 1e-9
    eps_cor: float = 1e-15
    n_pulses: float | None = None
    n_key_sifted: float | None = 1e6
    p_z_bob: float | None = None

    def replace(self, **kw) -> "ProtocolSettings":
        return dataclasses.replace(self, **kw)

    @property
    def sifting(self) -> float:
        """Fraction of detections kept for key in the asymptotic symmetric-error model:
        ``pA pB + (1 - pA)(1 - pB)`` (both bases give key; Lo, Chau, Ardehali 2005)."""
        pa = self.p_z_basis
        pb = pa if self.p_z_bob is None else self.p_z_bob
        return pa * pb + (1.0 - pa) * (1.0 - pb)


def link_from_config(cfg, n_detectors: int = 4, f_ec: float = DEFAULT_F_EC) -> LinkModel:
    """A :class:`LinkModel` from a ``LinkConfig``: channel loss, connector loss, Bob's efficiency,
    ``Y0 = background_yield(detectors.dark_count_per_gate, n_detectors)``, misalignment."""
    return LinkModel(loss_db_per_km=cfg.channel.loss_db_per_km, connector_loss_db=cfg.channel.connector_loss_db,
                     detector_efficiency=cfg.detectors.efficiency,
                     y0=background_yield(cfg.detectors.dark_count_per_gate, n_detectors),
                     e_detector=cfg.channel.misalignment, f_ec=f_ec)


def settings_from_config(cfg) -> ProtocolSettings:
    """A :class:`ProtocolSettings` from a ``LinkConfig``; the finite-key block is
    ``postprocessing.block_bits`` key-basis detections (Lim 2014's ``n_X``)."""
    s, pp = cfg.source, cfg.postprocessing
    return ProtocolSettings(mu_signal=s.mu_signal, mu_decoy=s.mu_decoy, mu_vacuum=s.mu_vacuum,
                            p_signal=s.p_signal, p_decoy=s.p_decoy, p_vacuum=s.p_vacuum, p_z_basis=s.p_z_basis,
                            eps_sec=pp.eps_sec, eps_cor=pp.eps_cor, n_pulses=None,
                            n_key_sifted=float(pp.block_bits))


# --------------------------------------------------------------------------- dispatch

def _check_method(method: str):
    if method not in METHODS:
        raise ValueError(f"method = {method!r}: must be one of " + ", ".join(METHODS))


def _validate_settings(method: str, s: ProtocolSettings) -> None:
    """ValueError naming the first out-of-range knob of ``s`` that ``method`` uses."""
    if method in ("gllp-decoy", "no-decoy"):
        _check("mu_signal", s.mu_signal, 0.0, 10.0, lo_open=True, unit="photons/pulse")
    elif method == "vacuum-weak-decoy":
        _check_decoy_intensities(s.mu_signal, s.mu_decoy, s.mu_vacuum)
    elif method == "finite-lim2014":
        lim2014_bounds(0.5, 0.0, 0.0, (s.mu_signal, s.mu_decoy, s.mu_vacuum), (s.p_signal, s.p_decoy, s.p_vacuum),
                       s.p_z_basis, eps_sec=s.eps_sec, eps_cor=s.eps_cor, n_pulses=s.n_pulses,
                       n_key_sifted=s.n_key_sifted, p_z_bob=s.p_z_bob)
    if method != "plob":
        _check("p_z_basis", s.p_z_basis, 0.0, 1.0)
        if s.p_z_bob is not None:
            _check("p_z_bob", s.p_z_bob, 0.0, 1.0)


def _lim_for(link: LinkModel, s: ProtocolSettings, eta) -> dict:
    return _lim_core(eta, link.y0, link.e_detector, link.f_ec, (s.mu_signal, s.mu_decoy, s.mu_vacuum),
                     (s.p_signal, s.p_decoy, s.p_vacuum), s.p_z_basis,
                     s.p_z_basis if s.p_z_bob is None else s.p_z_bob, s.eps_sec, s.eps_cor, s.n_pulses,
                     s.n_key_sifted)


def _raw_rate(method: str, link: LinkModel, s: ProtocolSettings, eta):
    """Key per pulse before clamping at 0 (continuous in the distance, for root finding).
    No validation: callers validate ``s`` once with :func:`_validate_settings`."""
    q = s.sifting
    if method == "gllp-decoy":
        return _gllp_raw(eta, link.y0, link.e_detector, s.mu_signal, link.f_ec, q, False)
    if method == "vacuum-weak-decoy":
        return _vw_raw(eta, link.y0, link.e_detector, s.mu_signal, s.mu_decoy, s.mu_vacuum, link.f_ec, q, False)
    if method == "no-decoy":
        return _nodecoy_raw(eta, link.y0, link.e_detector, s.mu_signal, link.f_ec, q)
    if method == "finite-lim2014":
        return _lim_for(link, s, eta)["length_per_pulse"]
    with np.errstate(divide="ignore"):
        return -np.log2(1.0 - eta)


def key_rate(method: str, link: LinkModel, settings: ProtocolSettings, distance_km):
    """Secret bits per sent pulse of ``method`` at ``distance_km`` (vectorised)."""
    _check_method(method)
    _validate_settings(method, settings)
    eta = np.asarray(link.eta(distance_km), dtype=float)
    if method == "finite-lim2014":
        return _out(_lim_for(link, settings, eta)["rate_per_pulse"])
    return _out(np.maximum(_raw_rate(method, link, settings, eta), 0.0))


# --------------------------------------------------------------------------- optimisation

#: Search ranges of the optimiser (inclusive). ``mu_decoy`` is further kept below
#: ``mu_signal - mu_vacuum``; ``p_vacuum = 1 - p_signal - p_decoy``.
DEFAULT_BOUNDS = {
    "mu_signal": (0.02, 1.2),
    "mu_signal_no_decoy": (1e-6, 1.0),
    "mu_decoy": (0.01, 0.8),
    "p_signal": (0.1, 0.98),
    "p_decoy_share": (0.05, 0.95),   # p_decoy / (1 - p_signal)
    "p_z_basis": (0.5, 0.98),
}

_FREE = {
    "gllp-decoy": ("mu_signal",),
    "no-decoy": ("mu_signal",),
    "vacuum-weak-decoy": ("mu_signal", "mu_decoy"),
    "finite-lim2014": ("mu_signal", "mu_decoy", "p_signal", "p_decoy", "p_z_basis"),
    "plob": (),
}


def _decode(method, u, base: ProtocolSettings, bounds) -> ProtocolSettings | None:
    """Unit-cube point -> settings (always satisfying the intensity/probability constraints)."""
    kw = {}
    if method == "no-decoy":
        lo, hi = bounds["mu_signal_no_decoy"]
        kw["mu_signal"] = 10 ** (math.log10(lo) + u[0] * (math.log10(hi) - math.log10(lo)))
        return base.replace(**kw)
    lo, hi = bounds["mu_signal"]
    mu = lo + u[0] * (hi - lo)
    kw["mu_signal"] = mu
    if len(u) > 1:
        mv = base.mu_vacuum
        dlo = max(bounds["mu_decoy"][0], mv + 1e-4)
        dhi = min(bounds["mu_decoy"][1], mu - mv - 1e-4)
        if dhi <= dlo:
            return None
        kw["mu_decoy"] = dlo + u[1] * (dhi - dlo)
    if len(u) > 2:
        plo, phi_ = bounds["p_signal"]
        ps = plo + u[2] * (phi_ - plo)
        slo, shi = bounds["p_decoy_share"]
        share = slo + u[3] * (shi - slo)
        zlo, zhi = bounds["p_z_basis"]
        kw.update(p_signal=ps, p_decoy=(1.0 - ps) * share, p_vacuum=(1.0 - ps) * (1.0 - share),
                  p_z_basis=zlo + u[4] * (zhi - zlo))
    return base.replace(**kw)


def _encode(method, s: ProtocolSettings, bounds) -> np.ndarray:
    """Settings -> unit-cube point (clipped), the inverse of :func:`_decode`."""
    def frac(v, lo, hi):
        return float(np.clip((v - lo) / (hi - lo), 0.0, 1.0)) if hi > lo else 0.0
    if method == "no-decoy":
        lo, hi = bounds["mu_signal_no_decoy"]
        return np.array([frac(math.log10(max(s.mu_signal, 1e-12)), math.log10(lo), math.log10(hi))])
    u = [frac(s.mu_signal, *bounds["mu_signal"])]
    n = len(_FREE[method])
    if n > 1:
        dlo = max(bounds["mu_decoy"][0], s.mu_vacuum + 1e-4)
        dhi = min(bounds["mu_decoy"][1], s.mu_signal - s.mu_vacuum - 1e-4)
        u.append(frac(s.mu_decoy, dlo, dhi))
    if n > 2:
        share = s.p_decoy / max(1.0 - s.p_signal, 1e-12)
        u += [frac(s.p_signal, *bounds["p_signal"]), frac(share, *bounds["p_decoy_share"]),
              frac(s.p_z_basis, *bounds["p_z_basis"])]
    return np.array(u)


def optimise(method: str, link: LinkModel, settings: ProtocolSettings, distance_km: float, *,
             bounds: dict | None = None) -> dict:
    """Maximise the key per pulse of ``method`` at one ``distance_km`` over the protocol's knobs.

    Free parameters: ``mu_signal`` (``gllp-decoy``, ``no-decoy``); ``mu_signal, mu_decoy``
    (``vacuum-weak-decoy``; asymptotically the optimum decoy is as weak as allowed, Ma 2005,
    so the lower bound ``DEFAULT_BOUNDS['mu_decoy']`` matters); ``mu_signal, mu_decoy,
    p_signal, p_decoy, p_z_basis`` (``finite-lim2014``, at fixed ``mu_vacuum``,
    ``p_vacuum = 1 - p_signal - p_decoy``). ``plob`` has none.

    The rate before clamping at 0 is maximised (so the search has a slope even where no key
    is possible) with bounded scipy searches (``minimize_scalar`` after a grid scan in 1-D,
    Powell from the given settings and fixed starts otherwise). Returns
    ``{"rate_per_pulse", "raw_rate_per_pulse", "settings", "params"}``.
    """
    _check_method(method)
    d = float(_check("distance_km", distance_km, 0.0, 5000.0, unit="km"))
    b = dict(DEFAULT_BOUNDS)
    if bounds:
        unknown = set(bounds) - set(b)
        if unknown:
            raise ValueError(f"bounds: unknown parameter {sorted(unknown)[0]!r}; known: " + ", ".join(b))
        b.update(bounds)
    free = _FREE[method]
    if free:        # the start point projected into the search space; validates the fixed knobs too
        start = _decode(method, _encode(method, settings, b), settings, b)
        if start is None:
            raise ValueError(f"mu_vacuum = {settings.mu_vacuum!r}: leaves no room for mu_decoy within the "
                             f"bounds {b['mu_decoy']} below mu_signal - mu_vacuum")
        settings = start
    _validate_settings(method, settings)
    eta = np.asarray(link.eta(d), dtype=float)
    if not free:
        r = float(_raw_rate(method, link, settings, eta))
        return {"rate_per_pulse": max(r, 0.0), "raw_rate_per_pulse": r, "settings": settings, "params": {}}
    scale = max(float(eta), 1e-300)

    def objective(u) -> float:
        s = _decode(method, np.clip(u, 0.0, 1.0), settings, b)
        if s is None:
            return 1e6
        r = float(_raw_rate(method, link, s, eta))
        return -r / scale if np.isfinite(r) else 1e6

    if len(free) == 1:
        grid = np.linspace(0.0, 1.0, 41)
        vals = np.array([objective([g]) for g in grid])
        i = int(np.argmin(vals))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        res = _opt.minimize_scalar(lambda x: objective([x]), bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-7})
        best_u, best_f = (np.array([res.x]), res.fun) if res.fun <= vals[i] else (np.array([grid[i]]), vals[i])
    else:
        starts = [_encode(method, settings, b), np.full(len(free), 0.5)]
        if len(free) == 2:
            starts.append(np.array([0.4, 0.05]))
        else:
            starts.append(np.array([0.4, 0.3, 0.6, 0.6, 0.6]))
        best_u, best_f = None, math.inf
        for x0 in starts:
            res = _opt.minimize(objective, x0, method="Powell", bounds=[(0.0, 1.0)] * len(free),
                                options={"xtol": 1e-5, "ftol": 1e-12, "maxfev": 4000})
            if res.fun < best_f:
                best_u, best_f = np.clip(res.x, 0.0, 1.0), float(res.fun)
    s = _decode(method, best_u, settings, b) if best_u is not None else None
    if s is None:
        raise ValueError(f"optimise: no settings within the bounds satisfy the constraints of {method} "
                         f"(mu_vacuum = {settings.mu_vacuum!r}, bounds {b})")
    s = s.replace(**{k: float(getattr(s, k)) for k in ("mu_signal", "mu_decoy", "p_signal", "p_decoy",
                                                         "p_vacuum", "p_z_basis")})
    raw = float(_raw_rate(method, link, s, eta))
    rate = float(key_rate(method, link, s, d))
    params = {k: getattr(s, k) for k in ("mu_signal", "mu_decoy", "mu_vacuum", "p_signal", "p_decoy",
                                         "p_vacuum", "p_z_basis") if k in free or k == "p_vacuum" and "p_signal" in free}
    return {"rate_per_pulse": rate, "raw_rate_per_pulse": raw, "settings": s, "params": params}


# --------------------------------------------------------------------------- maximum distance

def max_distance_km(method: str, link: LinkModel, settings: ProtocolSettings, *, optimise: bool = False,
                    hi_km: float = 5000.0, xtol_km: float = 1e-3, bounds: dict | None = None) -> float:
    """Longest fibre with a positive key rate, by root finding (``scipy.optimize.brentq``) on the
    unclamped rate (continuous and falling with distance); with ``optimise=True`` on the rate
    optimised at each distance. ``0.0`` if there is no key at 0 km; ``inf`` for ``plob`` and
    when the rate is still positive at ``hi_km``.
    """
    _check_method(method)
    _check("hi_km", hi_km, 0.0, 5000.0, lo_open=True, unit="km")
    if method == "plob":
        return math.inf
    if not optimise:
        _validate_settings(method, settings)
    opt = globals()["optimise"]

    def f(L: float) -> float:
        if optimise:
            return opt(method, link, settings, L, bounds=bounds)["raw_rate_per_pulse"]
        return float(_raw_rate(method, link, settings, np.asarray(link.eta(L), float)))

    if f(0.0) <= 0.0:
        return 0.0
    lo, step = 0.0, 25.0
    while True:
        hi = min(lo + step, hi_km)
        if f(hi) <= 0.0:
            break
        if hi >= hi_km:
            return math.inf
        lo, step = hi, step * 2.0
    return float(_opt.brentq(f, lo, hi, xtol=xtol_km))


# --------------------------------------------------------------------------- config-driven table

def keyrate_table(cfg, method: str, distances_km, optimise: bool = False, *, n_detectors: int = 4,
                  f_ec: float = DEFAULT_F_EC, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Key rate of ``method`` for a ``LinkConfig`` at each of ``distances_km``.

    Uses ``channel.loss_db_per_km``, ``connector_loss_db``, ``misalignment``,
    ``detectors.efficiency``, ``dark_count_per_gate`` (``Y0`` for ``n_detectors``),
    ``source.*`` intensities and probabilities, ``postprocessing.eps_sec``, ``eps_cor`` and
    ``block_bits`` (the finite-key block in key-basis detections), and
    ``gateware.pulse_rate_mhz`` for bit/s. With ``optimise=True`` each distance is optimised
    (:func:`optimise`), warm-started from the previous distance's optimum.

    Rows: ``distance_km, loss_db, eta, qber, rate_per_pulse, rate_bps, plob_per_pulse`` and the
    protocol parameters used (``mu_signal`` ...); ``finite-lim2014`` adds ``n_pulses`` and
    ``block_time_s`` (time to send the block at the pulse rate).
    """
    _check_method(method)
    dist = np.atleast_1d(_check("distance_km", distances_km, 0.0, 5000.0, unit="km")).ravel()
    link = link_from_config(cfg, n_detectors=n_detectors, f_ec=f_ec)
    base = settings_from_config(cfg)
    pulse_hz = cfg.gateware.pulse_rate_mhz * 1e6
    rows, current = [], base
    for i, d in enumerate(dist):
        s = base
        if optimise and method != "plob":
            res = globals()["optimise"](method, link, current, float(d))
            s = current = res["settings"]
        eta = float(link.eta(float(d)))
        rate = float(key_rate(method, link, s, float(d)))
        q_mu = float(_gain(s.mu_signal, eta, link.y0))
        row = {"distance_km": float(d),
               "loss_db": float(cfg.channel.loss_db_per_km * d + cfg.channel.connector_loss_db),
               "eta": eta,
               "qber": float(_errors(s.mu_signal, eta, link.y0, link.e_detector) / q_mu) if q_mu > 0 else E0,
               "rate_per_pulse": rate, "rate_bps": rate * pulse_hz,
               "plob_per_pulse": float(plob_bound(eta))}
        if method != "plob":
            row["mu_signal"] = s.mu_signal
        if method in ("vacuum-weak-decoy", "finite-lim2014"):
            row.update(mu_decoy=s.mu_decoy, mu_vacuum=s.mu_vacuum)
        if method == "finite-lim2014":
            n = float(_lim_for(link, s, np.asarray(eta))["n_pulses"])
            row.update(p_signal=s.p_signal, p_decoy=s.p_decoy, p_vacuum=s.p_vacuum, p_z_basis=s.p_z_basis,
                       n_pulses=n if math.isfinite(n) else None,
                       block_time_s=n / pulse_hz if math.isfinite(n) else None)
        rows.append(row)
        if progress:
            progress(i + 1, len(dist))
    return rows
