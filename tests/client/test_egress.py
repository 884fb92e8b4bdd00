import time

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common.recorddict_compat import fitres_to_recorddict

from client.learning.egress import (
    EGRESS_ERROR_CODE,
    EgressViolation,
    check_arrays,
    check_content,
    check_metrics,
    make_egress_guard,
)
from client.learning.model_shape import model_spec
from policy.model import NextActionPolicy, get_arrays

SPEC = model_spec()


def _model_arrays():
    return list(get_arrays(NextActionPolicy()).values())


def _reply(arrays, metrics, weight=1):
    return fitres_to_recorddict(
        FitRes(Status(Code.OK, "Success"), ndarrays_to_parameters(arrays), weight, metrics), True
    )


def test_a_well_formed_update_passes():
    check_content(_reply(_model_arrays(), {}), SPEC)


def test_an_update_with_metrics_is_refused():
    for name in ("epsilon", "train_loss", "declined", "upload_bytes"):
        with pytest.raises(EgressViolation, match="allow-list"):
            check_content(_reply(_model_arrays(), {name: 1.5}), SPEC)


def test_a_weight_other_than_one_is_refused():
    with pytest.raises(EgressViolation, match="constant"):
        check_content(_reply(_model_arrays(), {}, weight=600), SPEC)


def test_a_non_finite_update_is_refused():
    arrays = _model_arrays()
    arrays[0] = arrays[0].copy()
    arrays[0].flat[0] = np.nan
    with pytest.raises(EgressViolation, match="finite"):
        check_content(_reply(arrays, {}), SPEC)


def test_an_update_longer_than_the_policys_clip_is_refused():
    arrays = [np.full_like(a, 1.0) for a in _model_arrays()]
    with pytest.raises(EgressViolation, match="clipping norm"):
        check_content(_reply(arrays, {}), SPEC, max_norm=5.0)


def test_an_extra_array_is_refused():
    arrays = [*_model_arrays(), np.zeros(3, np.float32)]
    with pytest.raises(EgressViolation, match="arrays"):
        check_arrays(arrays, SPEC)


def test_a_wrong_shape_is_refused():
    arrays = _model_arrays()
    arrays[1] = np.zeros((2, 2), np.float32)
    with pytest.raises(EgressViolation, match="shape"):
        check_arrays(arrays, SPEC)


def test_a_wrong_dtype_is_refused():
    arrays = [a.astype(np.float64) for a in _model_arrays()]
    with pytest.raises(EgressViolation, match="dtype"):
        check_arrays(arrays, SPEC)


def test_a_string_metric_is_refused():
    with pytest.raises(EgressViolation, match="not a number"):
        check_metrics({"top1_sum": "1.0"})


def test_a_metric_outside_the_allow_list_is_refused():
    with pytest.raises(EgressViolation, match="allow-list"):
        check_metrics({"typed_text_length": 12})


def test_an_event_like_payload_is_refused_without_echoing_it():
    content = _reply(_model_arrays(), {"epsilon": 1.0})
    content.config_records["events"] = ConfigRecord({"k": "text", "x": "secret-canary"})
    with pytest.raises(EgressViolation) as info:
        check_content(content, SPEC)
    assert "secret-canary" not in str(info.value)


def test_raw_bytes_smuggled_as_an_array_record_are_refused():
    content = _reply(_model_arrays(), {})
    content.array_records["vault"] = ArrayRecord([np.frombuffer(b"raw events", np.uint8)])
    with pytest.raises(EgressViolation):
        check_content(content, SPEC)


def test_a_status_message_cannot_carry_text():
    content = _reply(_model_arrays(), {})
    content.config_records["fitres.status"] = ConfigRecord({"code": 0, "message": "hi there"})
    with pytest.raises(EgressViolation, match="status"):
        check_content(content, SPEC)


def _message():
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


def _context():
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def test_the_guard_mod_replaces_a_bad_reply_with_an_error_and_sends_nothing_else():
    guard = make_egress_guard(lambda ctx: SPEC)
    bad = _reply(_model_arrays(), {"window_title": 1.0})

    def app(msg, ctx):
        return Message(bad, reply_to=msg)

    message = _message()
    reply = guard(message, _context(), app)
    assert reply.has_error()
    assert reply.error.code == EGRESS_ERROR_CODE
    assert not reply.has_content()


def test_the_guard_mod_passes_a_good_reply_and_reports_it():
    seen = []
    guard = make_egress_guard(lambda ctx: SPEC, observe=lambda m, c, r: seen.append(r))
    good = _reply(_model_arrays(), {})
    message = _message()
    reply = guard(message, _context(), lambda msg, ctx: Message(good, reply_to=msg))
    assert not reply.has_error()
    assert seen == [reply]


def test_metric_records_outside_the_allow_list_are_refused():
    content = _reply(_model_arrays(), {})
    content.metric_records["fitres.extra"] = MetricRecord({"x": 1.0})
    with pytest.raises(EgressViolation):
        check_content(content, SPEC)


def test_flowers_scalar_records_carry_only_their_own_number():
    content = _reply(_model_arrays(), {})
    content.metric_records["fitres.num_examples"] = MetricRecord(
        {"num_examples": 1, "train_seconds": 3.0}
    )
    with pytest.raises(EgressViolation, match="constant"):
        check_content(content, SPEC)


def test_effort_figures_are_not_metrics_a_device_may_send():
    for name in ("train_seconds", "train_examples", "num_examples", "loss"):
        with pytest.raises(EgressViolation, match="allow-list"):
            check_content(_reply(_model_arrays(), {name: 1.0}), SPEC)
