"""An honest-but-curious server, written as test code, against the real client.

It follows the protocol and knows everything a server knows: the run config
(seed included), round numbers, run and node ids, every reply and every
checkpoint. Each test plays one attack of issue 13 and must learn nothing the
device's privacy ledger does not cover.
"""

from __future__ import annotations

import secrets
import time

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, RecordDict
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata

from client.control.consent import grant
from client.control.pause import pause
from client.learning.app import Declined, HearthClient, egress_guard_mod, refusal_mod
from client.learning.device import Device
from client.learning.featurize import Examples
from client.learning.training import TrainConfig, train_round
from client.storage.vault import Vault
from policy.events import Modality
from policy.model import NextActionPolicy, get_arrays
from policy.replies import (
    EVALUATE_LOSS,
    EVALUATE_SUMS,
    EVALUATE_WEIGHT,
    POLICY_MISMATCH,
    TRAIN_WEIGHT,
    UNAVAILABLE,
)
from privacy.policy import PolicyError, demo_policy_text, load_policy, parse_policy, policy_hash
from simulations.generator import generate_employee
from tests.server.fakes import small_policy_text


def _examples(n: int = 600) -> Examples:
    rng = np.random.default_rng(0)
    context = rng.integers(0, 20, size=(n, 8))
    return Examples(context, rng.integers(0, 5, n), (context[:, -1] + 1) % 20)


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([a.ravel() for a in arrays]).astype(np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _policy_file(tmp_path, **replace: str):
    text = small_policy_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "agreed.toml"
    path.write_text(text)
    return path


def _device(home, hours: float = 1.0, policy_file=None) -> Device:
    with Vault.open(home / "vault") as vault:
        vault.append(generate_employee(0, seed=3, hours=hours))
    grant(home, (Modality.POINTER, Modality.KEYS, Modality.APPS))
    return Device(home, policy_file=policy_file)


def _model() -> NextActionPolicy:
    torch.manual_seed(7)  # the server's initial model: the one thing its seed may decide
    return NextActionPolicy()


def _params() -> list[np.ndarray]:
    return list(get_arrays(_model()).values())


# -- 1. The DP-SGD noise cannot be regenerated from what the server knows -----------------


def test_the_server_cannot_regenerate_a_devices_noise_from_the_round_it_configured():
    # Noise dominates the update, so an attacker who could replay the noise would get the
    # upload back (cosine 1, as with the old seed-from-run-config); with device-secret
    # randomness its best replay is independent of the upload.
    config = TrainConfig(noise_multiplier=50.0, sample_rate=0.25, steps=4, learning_rate=1.0)
    upload = _flat(train_round(_model(), _examples(), config).delta)
    replay = _flat(train_round(_model(), _examples(), config).delta)
    assert abs(_cosine(upload, replay)) < 0.1


def test_the_noise_comes_from_the_os_and_from_nothing_else(monkeypatch):
    config = TrainConfig(noise_multiplier=1.0, sample_rate=0.25, steps=4)
    monkeypatch.setattr(secrets, "randbits", lambda bits: 12345)
    first = train_round(_model(), _examples(), config).delta
    second = train_round(_model(), _examples(), config).delta
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)  # a constant OS => identical rounds
    monkeypatch.undo()
    third = train_round(_model(), _examples(), config).delta
    assert not all(np.array_equal(a, b) for a, b in zip(first, third, strict=True))


def test_changing_every_value_the_server_supplies_changes_nothing_in_the_noise(
    monkeypatch, hearth_home, tmp_path
):
    # With the OS's randomness pinned, a device's update may depend on its data, the model
    # and its policy only: not on the seed, round, run id or node id the server chose.
    agreed = _policy_file(
        tmp_path,
        **{
            "spread_local_budget = true": "spread_local_budget = false",
            "device_epsilon_cap = 10.0": "device_epsilon_cap = 1000.0",
        },
    )
    device = _device(hearth_home, policy_file=agreed)
    monkeypatch.setattr(secrets, "randbits", lambda bits: 99)
    agreed_hash = policy_hash(load_policy(agreed))
    updates = []
    for seed, server_round in ((7, 1), (123456789, 5), (0, 9)):
        config = {
            "round": server_round,
            "num-rounds": 10,
            "policy-hash": agreed_hash,
            "seed": seed,
            "run-id": seed + 1,
            "node-id": seed + 2,
        }
        update, _, _ = HearthClient(device).fit(_params(), config)
        updates.append(update)
    for update in updates[1:]:
        for a, b in zip(updates[0], update, strict=True):
            np.testing.assert_array_equal(a, b)


# -- 3. Replies carry nothing outside the guarantee ---------------------------------------


def test_devices_of_different_sizes_send_replies_that_differ_only_in_the_noised_arrays(
    tmp_path, monkeypatch
):
    replies = []
    sizes = []
    for name, hours in (("small", 0.5), ("large", 3.0)):
        home = tmp_path / name
        monkeypatch.setenv("HEARTH_HOME", str(home))
        device = _device(home, hours=hours)
        sizes.append(len(device.examples(8)))
        client = HearthClient(device)
        config = {"round": 1, "num-rounds": 3, "policy-hash": policy_hash(load_policy())}
        update, weight, fit_metrics = client.fit(_params(), config)
        loss, count, eval_metrics = client.evaluate(_params(), config)
        replies.append((weight, fit_metrics, loss, count, sorted(eval_metrics), update))
    assert sizes[1] > 1.5 * sizes[0]
    (w1, f1, l1, c1, k1, u1), (w2, f2, l2, c2, k2, u2) = replies
    assert (w1, f1, l1, c1, k1) == (w2, f2, l2, c2, k2)
    assert (w1, f1, l1, c1) == (TRAIN_WEIGHT, {}, EVALUATE_LOSS, EVALUATE_WEIGHT)
    assert k1 == sorted(EVALUATE_SUMS)
    assert [a.shape for a in u1] == [a.shape for a in u2]


def test_an_evaluation_is_noised_and_paid_for_before_it_leaves(hearth_home):
    device = _device(hearth_home)
    client = HearthClient(device)
    config = {"round": 1, "policy-hash": policy_hash(load_policy())}
    counts = [client.evaluate(_params(), config)[2]["count"] for _ in range(3)]
    assert len(set(counts)) == 3  # the same held-out data, three different releases
    assert len(device.ledger().entries) == 3  # each one charged


def test_a_device_asked_to_evaluate_outside_its_gates_refuses(hearth_home):
    device = _device(hearth_home)
    client = HearthClient(device)
    with pytest.raises(Declined) as other_policy:
        client.evaluate(_params(), {"round": 1, "policy-hash": "0" * 64})
    assert other_policy.value.code == POLICY_MISMATCH
    pause(hearth_home)
    with pytest.raises(Declined) as paused:
        client.evaluate(_params(), {"round": 1, "policy-hash": policy_hash(load_policy())})
    assert paused.value.code == UNAVAILABLE
    assert device.ledger().entries == []


# -- 4. A decline says nothing about the employee or the laptop ---------------------------


def _train_message() -> Message:
    metadata = Metadata(
        run_id=1,
        message_id="m-1",
        src_node_id=0,
        dst_node_id=1,
        reply_to_message_id="",
        group_id="1",
        created_at=time.time(),
        ttl=600.0,
        message_type="train",
    )
    return make_message(metadata, RecordDict())


def test_every_reason_of_the_device_reaches_the_server_as_the_same_code_and_word():
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    seen = set()
    for reason in ("paused", "no consent", "on battery", "CPU busy: 87%", "budget exhausted"):

        def client(message: Message, ctx: Context, why: str = reason) -> Message:
            raise Declined(UNAVAILABLE)  # however the device words ``why`` for the employee

        reply = egress_guard_mod(_train_message(), context, lambda m, c: refusal_mod(m, c, client))
        assert reply.has_error()
        seen.add((reply.error.code, reply.error.reason))
    assert seen == {(UNAVAILABLE, "unavailable")}


# -- 7. Claims that a person reads ---------------------------------------------------------


def test_a_policy_whose_delta_is_not_small_against_the_largest_dataset_is_refused():
    text = (
        demo_policy_text()
        .replace("user_delta = 1e-7\n", "")
        .replace("delta = 1e-5", "delta = 1e-3")
    )
    with pytest.raises(PolicyError, match="max_examples_per_device"):
        parse_policy(text)
    assert load_policy().privacy.delta < 1 / (10 * load_policy().privacy.max_examples_per_device)


def test_a_device_trains_on_no_more_examples_than_delta_was_planned_for(
    hearth_home, tmp_path, monkeypatch
):
    agreed = _policy_file(
        tmp_path, **{"max_examples_per_device = 8000": "max_examples_per_device = 50"}
    )
    device = _device(hearth_home, policy_file=agreed)
    seen = []

    class Seen(Exception):
        pass

    def train_round_spy(model, examples, config):
        seen.append(len(examples))
        raise Seen

    monkeypatch.setattr("client.learning.training.train_round", train_round_spy)
    with pytest.raises(Seen):
        HearthClient(device).fit(
            _params(), {"round": 1, "policy-hash": policy_hash(load_policy(agreed))}
        )
    assert seen == [50]


# -- 2/5/6. The server side: what a checkpoint reader and the server can learn --
#
# Here the attacker reads the checkpoints and the campaign ledger as files (the ML team's
# view), knows the run config (seed included) and the devices' updates, and tries to strip
# the central noise; or it is a device that sends a malicious reply.

import json  # noqa: E402

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters  # noqa: E402

from server.app import build_strategy  # noqa: E402
from server.checkpoints import load_checkpoint  # noqa: E402
from server.config import CampaignConfig  # noqa: E402

_CENTRAL_NOISE = 1.2
_CLIP = 5.0  # the default policy's update_clip_norm


class _Nodes:
    """Flower's client manager, with three devices available."""

    def num_available(self) -> int:
        return 3

    def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
        return True

    def all(self) -> dict[str, object]:
        return {str(i): object() for i in range(3)}


def _server(checkpoint_dir, central_noise: float = _CENTRAL_NOISE):
    text = (
        demo_policy_text()
        .replace("user_delta = 1e-7\n", "")
        .replace("central_noise_multiplier = 0.0", f"central_noise_multiplier = {central_noise}")
    )
    config = CampaignConfig(checkpoint_dir=str(checkpoint_dir), seed=7, server_momentum=0.0)
    return build_strategy(config, parse_policy(text), run_id=1)


def _fit_reply(arrays: list[np.ndarray], weight: int = TRAIN_WEIGHT):
    return (object(), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), weight, {}))


def _updates(model: list[np.ndarray], norm: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = [rng.normal(size=a.shape) for a in model]
    scale = norm / np.linalg.norm(_flat(raw))
    return [(r * scale).astype(np.float32) for r in raw]


def _run_round(strategy, replies) -> list[np.ndarray]:
    """One round as the workflow runs it; returns the model as the checkpoint holds it."""
    strategy.configure_fit(1, ndarrays_to_parameters(strategy.inner.global_arrays), _Nodes())
    strategy.aggregate_fit(1, replies, [])
    strategy.aggregate_evaluate(1, [], [])
    return list(load_checkpoint(strategy.checkpoint_dir / "round-0001.npz").values())


def test_two_servers_with_the_same_run_config_and_updates_release_different_noised_models(
    tmp_path,
):
    models = []
    for name in ("a", "b"):
        strategy = _server(tmp_path / name)
        updates = [_updates(strategy.inner.global_arrays, 1.0, seed=s) for s in range(3)]
        models.append(_run_round(strategy, [_fit_reply(u) for u in updates]))
    assert not any(np.array_equal(a, b) for a, b in zip(*models, strict=True))


def test_a_checkpoint_reader_cannot_regenerate_the_central_noise_from_the_files(tmp_path):
    strategy = _server(tmp_path)
    before = [a.copy() for a in strategy.inner.global_arrays]
    updates = [_updates(before, 1.0, seed=s) for s in range(3)]
    after = _run_round(strategy, [_fit_reply(u) for u in updates])

    # What the attacker reads: the sidecar, the campaign ledger, the checkpoint.
    sidecar = json.loads((tmp_path / "round-0001.json").read_text())
    ledger_text = (tmp_path / "campaign-ledger.json").read_text()
    for secret_name in ("rng", "noise_seed", "generator", "entropy"):
        assert secret_name not in ledger_text and secret_name not in json.dumps(sidecar)
    seed, server_round = sidecar["config"]["seed"], sidecar["round"]
    noise_free = [sum(u[i].astype(np.float64) for u in updates) / 3 for i in range(len(before))]
    released = [
        a.astype(np.float64) - b - m for a, b, m in zip(after, before, noise_free, strict=True)
    ]
    std = _CENTRAL_NOISE * _CLIP / 3  # q = 1, N = 3
    assert _flat(released).std() == pytest.approx(std, rel=0.05)  # the noise is there

    # The old attacks: replay the noise from the run config's seed (and the round).
    for seeding in (seed, [seed, server_round]):
        rng = np.random.default_rng(seeding)
        replay = [rng.normal(0.0, std, size=a.shape) for a in before]
        residual = _flat([r - p for r, p in zip(released, replay, strict=True)])
        assert residual.std() > 0.9 * std  # the noise-free mean is not recovered
        assert abs(_cosine(_flat(released), _flat(replay))) < 0.05


def test_a_device_claiming_weight_600_moves_the_model_no_more_than_an_honest_one(tmp_path):
    strategy = _server(tmp_path, central_noise=0.0)
    before = [a.copy() for a in strategy.inner.global_arrays]
    honest = _updates(before, 1.0, seed=1)
    attack = _updates(before, 1.0, seed=2)
    after = _run_round(
        strategy, [_fit_reply(honest), _fit_reply(honest), _fit_reply(attack, weight=600)]
    )
    moved = _flat([a - b for a, b in zip(after, before, strict=True)])
    assert np.linalg.norm(moved) <= np.linalg.norm(_flat(honest)) * (1 + 1e-5)
    np.testing.assert_allclose(moved, _flat(honest), atol=1e-6)  # none of it is the attacker's


def test_a_device_sending_a_huge_update_moves_the_model_no_more_than_an_honest_one(tmp_path):
    strategy = _server(tmp_path, central_noise=0.0)
    before = [a.copy() for a in strategy.inner.global_arrays]
    honest = _updates(before, 1.0, seed=1)
    huge = _updates(before, 1e6, seed=2)
    after = _run_round(strategy, [_fit_reply(honest), _fit_reply(honest), _fit_reply(huge)])
    moved = _flat([a - b for a, b in zip(after, before, strict=True)])
    np.testing.assert_allclose(moved, _flat(honest), atol=1e-6)
    sidecar = json.loads((tmp_path / "round-0001.json").read_text())
    assert sidecar["fit"]["clients_rejected"] == 1
