"""Distributed DP: each device adds its share of the central noise before SecAgg+ masks it.

The policy's central noise is ``N(0, (z C)^2)`` per coordinate on the sum of the
clipped updates (``z``: ``central_noise_multiplier``, ``C``: ``update_clip_norm``).
Under ``distributed_noise`` no server adds it: each device adds
``N(0, (z C)^2 / m)`` to its own clipped update, ``m`` being the policy's
``min_cohort``, so the sum of any ``m`` or more updates carries at least the full
noise, and neither the server nor anyone holding its checkpoints ever sees a sum
without it. Fewer than ``m`` shares would not: devices refuse to unmask a round
with fewer active devices than ``m`` (``client.learning.secagg_guard``), and the server
discards a round with fewer contributors (``server.campaign``). More than ``m``
contributors add more noise than accounted (``sqrt(n / m)`` times the std), which
costs utility, never privacy.

The share is drawn from the device's own OS CSPRNG (``privacy.randomness``) and
added in float64, after the egress guard checked the clipped update's norm and
before Flower's ``secaggplus_mod`` quantizes and masks it. Quantization clips each
coordinate to the setup's ``clipping_range``; a device refuses a setup narrower
than a noised coordinate plausibly gets (``required_clipping_range``: the clip
plus 10 share standard deviations, exceeded with probability below 1e-22), or
one whose modulus the sum of its sampled devices could wrap around
(``client.learning.secagg_guard``).

Stochastic rounding in Flower's quantization adds a data-dependent error of at most
one quantization step per coordinate (2 x clipping_range / quantization_range, about
1e-5 here), far below the noise; the accountant does not model it (the distributed
discrete Gaussian of Kairouz et al. 2021 would).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
from flwr.app import Array, Context, Message, MessageType

from privacy.distributed_noise import share_std
from privacy.policy import PrivacyPolicy
from privacy.randomness import gaussian, secret_generator

_PARAMETERS_RECORD: Final = "fitres.parameters"


def add_share(
    arrays: list[np.ndarray[tuple[int, ...], np.dtype[np.float32]]], std: float
) -> list[np.ndarray[tuple[int, ...], np.dtype[np.float32]]]:
    """``arrays`` plus a fresh Gaussian share of std ``std``, added in float64."""
    rng = secret_generator()
    return [
        (a.astype(np.float64) + gaussian(rng, std, tuple(a.shape))).astype(np.float32)
        for a in arrays
    ]


def make_distributed_noise_mod(
    policy_for: Callable[[Context], PrivacyPolicy],
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """The mod: adds the device's noise share to every successful training reply."""

    def distributed_noise_mod(
        message: Message, context: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        reply = call_next(message, context)
        if message.metadata.message_type != MessageType.TRAIN or reply.has_error():
            return reply
        std = share_std(policy_for(context))
        record = reply.content.array_records.get(_PARAMETERS_RECORD)
        if std <= 0 or record is None:
            return reply
        names = list(record.keys())
        noised = add_share([record[name].numpy() for name in names], std)
        for name, array in zip(names, noised, strict=True):
            record[name] = Array(array)
        return reply

    return distributed_noise_mod


__all__ = ["add_share", "make_distributed_noise_mod"]
