import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.learning.app import secure_aggregation_mod
from privacy.policy import load_policy
from server.campaign import round_instructions
from server.config import CampaignConfig, ServerConfigError


def _message(content):
    return Message(content=content, dst_node_id=1, message_type=MessageType.TRAIN)


def _context():
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def test_secure_aggregation_mod_is_transparent_without_secaggplus(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    message = _message(RecordDict({"config": ConfigRecord({"round": 1})}))
    seen = []

    def call_next(msg, ctx):
        seen.append(msg)
        return Message(RecordDict(), reply_to=msg)

    secure_aggregation_mod(message, _context(), call_next)
    assert seen == [message]


def test_secaggplus_switch_is_read_from_the_run_config_and_validated():
    config = CampaignConfig.from_run_config({"secaggplus": True})
    assert config.secaggplus
    with pytest.raises(ServerConfigError, match="reconstruction-threshold"):
        CampaignConfig.from_run_config(
            {"secaggplus": True, "secaggplus-reconstruction-threshold": 4}
        )


def test_round_instructions_carry_nothing_that_bears_on_privacy():
    sent = round_instructions(CampaignConfig(secaggplus=True), load_policy(), 1)
    # The model's shape is the server's choice within the bounds every device holds it to.
    shape = {"context-length", "hidden-width"}
    assert set(sent) == {"round", "num-rounds", "policy-hash", "learning-rate", *shape}
