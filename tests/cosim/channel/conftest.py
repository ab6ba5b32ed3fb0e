"""Shared fixtures for the channel-model tests."""
import dataclasses

import numpy as np
import pytest
from scipy import stats

from qkdlink.cosim.channel.measure import binomial_tail
from qkdlink.host.config import default_link_config

P_3SIGMA = 2 * stats.norm.sf(3.0)   # two-sided tail probability of a 3-sigma deviation


def _link(**sections):
    cfg = default_link_config()
    return dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **fields)
                                       for name, fields in sections.items()})


def _binomial_check(k: int, n: int, p: float, what: str, level: float = P_3SIGMA) -> float:
    if n == 0:
        return 0.0
    sd = np.sqrt(n * p * (1 - p))
    z = (k - n * p) / sd if sd > 0 else (0.0 if k == n * p else np.inf)
    assert binomial_tail(k, n, p) >= level, \
        f"{what}: measured {k}/{n} = {k / n:.6g}, expected {p:.6g} (z = {z:+.2f})"
    return float(z)


@pytest.fixture
def link():
    """The built-in config with fields changed: ``link(channel=dict(length_km=0.0), ...)``."""
    return _link


@pytest.fixture
def binomial_check():
    """Assert ``k`` of ``n`` agrees with ``p``: exact two-sided binomial tail >= ``level``
    (default: the 3-sigma equivalent, 0.27 %); returns the normal z for aggregate checks."""
    return _binomial_check
