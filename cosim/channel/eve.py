"""Eavesdropping attacks on the quantum channel (simulation side; the analytic side is in
:mod:`.expectations`). Eve sits at Alice's output and acts pulse by pulse on the photon
number and state; whatever she sends on goes through Bob's optics with the channel's
polarisation rotation.

**Intercept-resend** (:class:`InterceptResend`; Bennett & Brassard 1984; Gisin, Ribordy,
Tittel, Zbinden, RMP 74, 145 (2002), Sec. VI.A): on a fraction ``q`` of the pulses Eve
measures in a random basis with an ideal detector and prepares her result anew. An empty pulse
gives her nothing and she sends nothing. In the right basis (probability 1/2) she learns the
bit and resends the right state; in the wrong basis her bit is random and Bob's sifted result
is random: QBER ``q/4`` from the attack (25 % for ``q = 1``), plus the channel's own errors.
She resends either one photon (``resend_mu=None``) or a weak coherent pulse of mean
``resend_mu``, into the same lossy channel. A single-photon resend lowers Bob's gain to
``(1 - e^-mu) * eta`` instead of ``~ mu * eta``, a coherent resend sets it by ``resend_mu``.

**Photon-number splitting** (:class:`PhotonNumberSplitting`; Brassard, Lütkenhaus, Mor,
Sanders, PRL 85, 1330 (2000)): Eve measures the photon number without disturbing the
polarisation (QND), keeps one photon of every multi-photon pulse (read out after basis
announcement: full information, no errors) and forwards the other ``n - 1`` photons to Bob over
a line of transmittance ``forward_transmittance`` (1: lossless, replacing the fibre). To
hide the attack in Bob's *signal* gain she blocks a fraction ``block_single_fraction`` of
the single-photon pulses (forwarding the rest); :func:`.expectations.pns_preserving_signal_gain`
finds the fraction (and, when blocking all single photons is still not enough, the forward
transmittance) that gives the honest signal gain. Eve cannot tell signal from decoy pulses
(same state for the same photon number), so the yields ``Y_n`` are the same for all
intensities; with ``Y_1`` ~ 0 and ``Y_n`` (n >= 2) ~ 1 the decoy gain drops towards
``P_nu(n >= 2) / P_mu(n >= 2) ~ (nu/mu)^2`` of the signal gain instead of ``~ nu/mu``, and the
decoy estimate of the single-photon yield (Ma et al., PRA 72, 012326 (2005)) falls to ~0 or
below: the attack is seen (Hwang, PRL 91, 057901 (2003); Lo, Ma, Chen, PRL 94, 230504 (2005)).

**Beam splitting** (:class:`BeamSplitting`; Bennett, Bessette, Brassard, Salvail, Smolin,
J. Cryptology 5, 3 (1992)): Eve replaces the lossy fibre by a lossless one and a beam splitter
of transmission ``eta`` (the fibre's), keeping the reflected photons. Bob's statistics are
exactly the honest ones, so the decoy statistics show nothing; Eve learns the slots in which
she holds a photon (multi-photon pulses), which the decoy-state key rate already pays for.

Every attack returns, per pulse with at least one photon, the photon number and state sent to
Bob, the transmittance that still applies, and an action code (``EVE_*``) kept as truth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._checks import check_range

__all__ = ["InterceptResend", "PhotonNumberSplitting", "BeamSplitting", "EveOutput", "EVE_NONE",
           "EVE_INTERCEPT_RESEND", "EVE_PNS_KEPT", "EVE_PNS_BLOCKED", "EVE_BEAM_SPLIT"]

EVE_NONE, EVE_INTERCEPT_RESEND, EVE_PNS_KEPT, EVE_PNS_BLOCKED, EVE_BEAM_SPLIT = 0, 1, 2, 3, 4


class EveOutput(NamedTuple):
    photons: np.ndarray        # photons sent on towards Bob (int)
    state: np.ndarray          # their polarisation state 0..3
    transmittance: np.ndarray  # transmittance still to apply before Bob's receiver
    action: np.ndarray         # EVE_* per pulse (uint8)


@dataclass(frozen=True)
class InterceptResend:
    """Intercept-resend on a fraction of the pulses (see the module docstring)."""
    fraction: float = 1.0
    resend_mu: float | None = None

    def __post_init__(self):
        check_range("eve.fraction", self.fraction, 0.0, 1.0)
        if self.resend_mu is not None:
            check_range("eve.resend_mu", self.resend_mu, 0.0, 10.0, "photons/pulse", lo_open=True)

    def act(self, state, photons, transmittance, rng: np.random.Generator) -> EveOutput:
        n = state.size
        hit = (rng.random(n) < self.fraction) & (photons > 0)
        e_basis = rng.integers(0, 2, n)
        e_bit = np.where(e_basis == (state >> 1), state & 1, rng.integers(0, 2, n))
        new_state = np.where(hit, 2 * e_basis + e_bit, state).astype(np.uint8)
        resent = np.ones(n, np.int32) if self.resend_mu is None else rng.poisson(self.resend_mu, n).astype(np.int32)
        return EveOutput(np.where(hit, resent, photons).astype(np.int32), new_state,
                         np.broadcast_to(transmittance, (n,)).astype(float),
                         np.where(hit, EVE_INTERCEPT_RESEND, EVE_NONE).astype(np.uint8))


@dataclass(frozen=True)
class PhotonNumberSplitting:
    """PNS attack (see the module docstring)."""
    block_single_fraction: float = 1.0
    forward_transmittance: float = 1.0

    def __post_init__(self):
        check_range("eve.block_single_fraction", self.block_single_fraction, 0.0, 1.0)
        check_range("eve.forward_transmittance", self.forward_transmittance, 0.0, 1.0, lo_open=True)

    def act(self, state, photons, transmittance, rng: np.random.Generator) -> EveOutput:
        n = state.size
        single = photons == 1
        blocked = single & (rng.random(n) < self.block_single_fraction)
        multi = photons >= 2
        out = np.where(multi, photons - 1, np.where(blocked, 0, photons)).astype(np.int32)
        action = np.where(multi, EVE_PNS_KEPT, np.where(blocked, EVE_PNS_BLOCKED, EVE_NONE)).astype(np.uint8)
        return EveOutput(out, state.astype(np.uint8), np.full(n, self.forward_transmittance), action)


@dataclass(frozen=True)
class BeamSplitting:
    """Beam-splitting attack with the channel's own transmittance (see the module docstring)."""

    def act(self, state, photons, transmittance, rng: np.random.Generator) -> EveOutput:
        n = state.size
        eta = np.broadcast_to(transmittance, (n,))
        to_bob = rng.binomial(photons, eta).astype(np.int32)
        action = np.where(photons - to_bob > 0, EVE_BEAM_SPLIT, EVE_NONE).astype(np.uint8)
        return EveOutput(to_bob, state.astype(np.uint8), np.ones(n), action)
