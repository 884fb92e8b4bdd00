"""What a device requires of the secure aggregation it takes part in (policy ``[aggregation]``).

Flower's ``secaggplus_mod`` checks that SecAgg+ messages are well typed and come in
order; for the rest it trusts the server. Before a TRAIN message reaches it,
``client.learning.app.secure_aggregation_mod`` asks this module whether the device's own
policy allows answering:

* a plain TRAIN (no SecAgg+ stage) while the policy requires SecAgg+ is refused
  (``POLICY_MISMATCH``): the server would see this device's update on its own;
* a SETUP with fewer shares than ``min_num_shares``, a reconstruction threshold
  below ``min_reconstruction_fraction`` of its shares, or fewer sampled devices
  than the cohort rule (``training.min_cohort``) is refused (``POLICY_MISMATCH``);
* an UNMASK that names a device both active and dead, names one twice, or does
  not name this device active (it sent its masked vector) is refused
  (``PROTOCOL_ERROR``): Flower's ``_unmask`` would hand out both the share of a
  neighbour's mask seed and the share of its pairwise key, and with both the
  server removes every mask from that neighbour's update;
* an UNMASK naming fewer active devices than ``min_cohort`` is refused
  (``POLICY_MISMATCH``): the noise and the cohort rule were calibrated for at least
  that many;
* a SETUP whose modulus the sum of its sampled devices' quantized updates could wrap
  around (``SAMPLE_NUMBER x TARGET_RANGE > MOD_RANGE``) is refused
  (``POLICY_MISMATCH``): the unmasked sum would be garbage;
* under distributed noise (``client.learning.distributed_noise``), a SETUP whose clipping range
  would cut the noise share (``required_clipping_range``) is refused, and an UNMASK
  must say how many devices are active in the whole round
  (``privacy.distributed_noise.ACTIVE_COUNT_KEY``, which hearth's workflow adds): fewer
  than ``min_cohort``, the cohort the shares were calibrated for, or fewer than the
  active neighbours this device sees, and it refuses (``POLICY_MISMATCH``), so the
  masks of a sum with less than the accounted noise are never removed. A device
  checks the count against its own neighbourhood only; the rest it takes from a
  server that runs the protocol as written.

A device sees only its own neighbourhood: an UNMASK lists its neighbours, so the
cohort it checks is the active part of that neighbourhood. These checks hold
against a curious server that runs the protocol as written; a server that deviates
in ways a device cannot see from its own messages (for instance enrolling fake
devices as a victim's neighbours, up to the threshold) is not stopped by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage

from policy.replies import POLICY_MISMATCH, PROTOCOL_ERROR
from privacy.distributed_noise import (
    ACTIVE_COUNT_KEY,
    max_summed_devices,
    required_clipping_range,
    share_std,
)
from privacy.policy import PrivacyPolicy


@dataclass(frozen=True)
class Violation:
    """Why the device will not answer: the code the server gets, the reason it keeps."""

    code: int
    reason: str


def check_plain_round(policy: PrivacyPolicy) -> Violation | None:
    """A TRAIN message outside SecAgg+: refused when the policy requires SecAgg+."""
    if policy.aggregation.require_secure_aggregation:
        return Violation(
            POLICY_MISMATCH,
            "round refused: a plain round (no SecAgg+) under a policy that requires SecAgg+",
        )
    return None


def check_secagg(
    configs: Mapping[str, Any], node_id: int, policy: PrivacyPolicy
) -> Violation | None:
    """A SecAgg+ message (its config record) against the policy; None when it may be answered."""
    stage = configs.get(Key.STAGE)
    if stage == Stage.SETUP:
        return _check_setup(configs, policy)
    if stage == Stage.UNMASK:
        return _check_unmask(configs, node_id, policy)
    return None


def _int(configs: Mapping[str, Any], key: str) -> int | None:
    value = configs.get(key)
    return value if type(value) is int else None


def _int_list(configs: Mapping[str, Any], key: str) -> list[int] | None:
    value = configs.get(key)
    if not isinstance(value, list) or any(type(v) is not int for v in value):
        return None
    return value


def _check_setup(configs: Mapping[str, Any], policy: PrivacyPolicy) -> Violation | None:
    shares = _int(configs, Key.SHARE_NUMBER)
    threshold = _int(configs, Key.THRESHOLD)
    sampled = _int(configs, Key.SAMPLE_NUMBER)
    if shares is None or threshold is None or sampled is None:
        return Violation(PROTOCOL_ERROR, "SecAgg+ setup refused: a malformed configuration")
    rules = policy.aggregation
    if shares < rules.min_num_shares:
        return Violation(
            POLICY_MISMATCH,
            f"SecAgg+ setup refused: {shares} shares, the policy requires at least "
            f"{rules.min_num_shares}",
        )
    least = rules.min_threshold(shares)
    if threshold < least:
        return Violation(
            POLICY_MISMATCH,
            f"SecAgg+ setup refused: reconstruction threshold {threshold} of {shares} shares, "
            f"the policy requires at least {least} ({rules.min_reconstruction_fraction:g})",
        )
    if sampled < policy.training.min_cohort:
        return Violation(
            POLICY_MISMATCH,
            f"SecAgg+ setup refused: {sampled} devices sampled, the policy's cohort is at "
            f"least {policy.training.min_cohort}",
        )
    return _check_ranges(configs, sampled, policy)


def _check_ranges(
    configs: Mapping[str, Any], sampled: int, policy: PrivacyPolicy
) -> Violation | None:
    """No wrap-around of the modulus; a clipping range wide enough for the noise share."""
    target, modulus, clipping = (
        configs.get(Key.TARGET_RANGE),
        configs.get(Key.MOD_RANGE),
        configs.get(Key.CLIPPING_RANGE),
    )
    if type(target) is not int or type(modulus) is not int or type(clipping) is not float:
        return Violation(PROTOCOL_ERROR, "SecAgg+ setup refused: a malformed configuration")
    if target <= 0 or sampled > max_summed_devices(target, modulus):
        return Violation(
            POLICY_MISMATCH,
            f"SecAgg+ setup refused: {sampled} devices at {target} quantization levels would "
            f"wrap the modulus {modulus} around",
        )
    needed = required_clipping_range(policy)
    if share_std(policy) > 0 and clipping < needed:
        return Violation(
            POLICY_MISMATCH,
            f"SecAgg+ setup refused: clipping range {clipping:g} would cut this device's "
            f"noise share; the policy needs at least {needed:.4g}",
        )
    return None


def _check_unmask(
    configs: Mapping[str, Any], node_id: int, policy: PrivacyPolicy
) -> Violation | None:
    active = _int_list(configs, Key.ACTIVE_NODE_ID_LIST)
    dead = _int_list(configs, Key.DEAD_NODE_ID_LIST)
    if active is None or dead is None:
        return Violation(PROTOCOL_ERROR, "SecAgg+ unmask refused: malformed node lists")
    if len(set(active)) != len(active) or len(set(dead)) != len(dead):
        return Violation(PROTOCOL_ERROR, "SecAgg+ unmask refused: a node is listed twice")
    if set(active) & set(dead):
        return Violation(
            PROTOCOL_ERROR,
            f"SecAgg+ unmask refused: {len(set(active) & set(dead))} node(s) listed both "
            "active and dead (both shares would unmask them)",
        )
    if node_id not in active:
        return Violation(
            PROTOCOL_ERROR,
            "SecAgg+ unmask refused: this device sent its masked vector but is not listed active",
        )
    if share_std(policy) > 0:
        return _check_active_count(configs, len(active), policy)
    if len(active) < policy.training.min_cohort:
        return Violation(
            POLICY_MISMATCH,
            f"SecAgg+ unmask refused: {len(active)} active device(s), the policy's cohort is "
            f"at least {policy.training.min_cohort}",
        )
    return None


def _check_active_count(
    configs: Mapping[str, Any], neighbours_active: int, policy: PrivacyPolicy
) -> Violation | None:
    """Distributed noise: unmask only a sum of at least the calibrated number of shares."""
    count = _int(configs, ACTIVE_COUNT_KEY)
    if count is None or count < neighbours_active:
        return Violation(
            POLICY_MISMATCH,
            "SecAgg+ unmask refused: the round's active device count is missing or "
            "below the active neighbours this device sees",
        )
    if count < policy.training.min_cohort:
        return Violation(
            POLICY_MISMATCH,
            f"SecAgg+ unmask refused: {count} active device(s) carry less noise than the "
            f"{policy.training.min_cohort} shares it was calibrated for",
        )
    return None


__all__ = ["Violation", "check_plain_round", "check_secagg"]
