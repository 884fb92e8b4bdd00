"""Inside a bundle host the bundle's own SecAgg+ mod leaves the inner fit message alone.

The device's installed mods around the bundle run SecAgg+ and its policy checks; the
bundle receives only the inner (plain) fit message. Refusing it as "a plain round"
made every laptop under a policy requiring SecAgg+ decline every secure round.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.supercore.task_identity import TaskIdentity

from client.app import secure_aggregation_mod
from client.bundle_host import ENV_IN_BUNDLE_HOST
from privacy.policy import deployment_policy_text


def _plain_train() -> Message:
    return Message(
        RecordDict({"config": ConfigRecord({"round": 1})}),
        dst_node_id=1,
        message_type=MessageType.TRAIN,
    )


def test_the_inner_fit_message_reaches_the_bundle_under_a_secaggplus_policy(
    hearth_home, monkeypatch
):
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)
    policy = hearth_home.parent / "deployment.toml"
    policy.write_text(deployment_policy_text())  # requires SecAgg+
    monkeypatch.setenv("HEARTH_POLICY", str(policy))
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    seen: list[Message] = []

    outside = secure_aggregation_mod(_plain_train(), context, lambda m, c: seen.append(m) or m)
    assert outside.has_error() and seen == []  # a plain round on the device: refused

    monkeypatch.setenv(ENV_IN_BUNDLE_HOST, "1")
    inner = _plain_train()
    reply = secure_aggregation_mod(inner, context, lambda m, c: seen.append(m) or m)
    assert seen == [inner] and not reply.has_error()
