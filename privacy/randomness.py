"""Randomness that protects privacy: seeded from the OS, never from anything a party can see.

DP noise and sampling are only as secret as their seed. A seed taken from a run
config, a round number or a log lets whoever knows it regenerate the noise and
subtract it. So every generator here is seeded with 256 fresh bits from the
operating system's CSPRNG (``secrets``) when it is made, and is made anew for each
round; nothing about the seed is returned, stored or logged. numpy's PCG64DXSM
holds a 128-bit state (torch's ``Generator.manual_seed`` takes only 64 bits).

Floating point: a Gaussian sampled in floating point is not exactly Gaussian, and
the low bits of a noised value can reveal the noise (Mironov 2012; Jin et al.,
"Are We There Yet?", 2022). ``gaussian`` follows the mitigation Opacus' secure
mode uses (Holohan and Braghin, 2021): each value is the sum of four float64
draws at half the standard deviation, rounded to float32 only at the end. This
raises the cost of such an attack far beyond a single draw; it is a hardening,
not a proof, and the README says so.
"""

from __future__ import annotations

import secrets
from typing import Final

import numpy as np
from numpy.typing import NDArray

SEED_BITS: Final = 256
_DRAWS: Final = 4  # sum of 4 draws at std/2 has the requested std


def secret_generator() -> np.random.Generator:
    """A generator seeded with fresh OS entropy; make one per round, never persist it."""
    return np.random.Generator(np.random.PCG64DXSM(secrets.randbits(SEED_BITS)))


def gaussian(rng: np.random.Generator, std: float, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Gaussian noise of standard deviation ``std``, hardened as the module note says."""
    if std < 0:
        raise ValueError("noise standard deviation must be non-negative")
    if std == 0:
        return np.zeros(shape, dtype=np.float64)
    total = rng.normal(0.0, std / 2.0, size=shape)
    for _ in range(_DRAWS - 1):
        total += rng.normal(0.0, std / 2.0, size=shape)
    return total


def poisson_mask(rng: np.random.Generator, size: int, rate: float) -> NDArray[np.bool_]:
    """Which of ``size`` items join: each independently with probability ``rate``."""
    return rng.random(size) < rate


__all__ = ["SEED_BITS", "gaussian", "poisson_mask", "secret_generator"]
