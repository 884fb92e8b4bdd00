"""hearth's ClientApp runner: the signed-code gate between the SuperNode and any app code.

How it holds in Flower 1.41. ``flower-supernode --isolation process`` starts no
app processes of its own: it queues each message from the SuperLink as a task
on its Runtime API (loopback HTTP) and waits for an executor to claim it. hearth
is that executor (``serve``): it claims CLIENT_APP tasks with the Runtime API's
``AcquireTask`` and runs each one in a fresh ``python -m client.deployment.runner task``
process (``run_task``), which does what Flower's ``flwr-clientapp`` does, with
hearth's checks inserted before the device's ClientApp sees the message:

1. the bundle (``client.deployment.bundle_trust.admit_bundle``): the run's signed manifest
   names the SHA-256 computed here from the bytes received; the app id, version
   and hash the SuperLink sent are safe names equal to the manifest's; the
   signing key is not revoked by a current revocation list; the manifest is
   within its validity window and not an older release than this device
   accepted; its ClientApp is the device's own. Otherwise refuse, before
   anything about the employee is looked at;
2. consent and pause (``client.control.participation.admit``): otherwise decline;
3. the resource governor (idle, mains, CPU; decided once per round): otherwise
   decline; when admitted, the process drops to low priority with one thread.

A refusal or a decline is replied as an error: a code and its fixed word from
``policy.replies`` (every reason of the employee's or the laptop's is the one
code UNAVAILABLE), while the real reason is recorded for ``hearth status`` only.
Dependencies are never installed at run time.

On a machine that hosts a fleet, ``HEARTH_ZYGOTE`` makes ``serve`` fork each task
from a preloaded interpreter (``client.deployment.zygote``) instead of starting a
fresh one: the forked task runs this same ``task`` code, with the same checks in
the same order; only the import of torch and Flower is saved. Unset (every
laptop), tasks are fresh processes.

No code of the bundle runs on the device. The bundle's ClientApp must be the
device's own ``client.learning.app:app`` (``client.deployment.bundle_trust`` refuses any other), and
this process runs the *installed* hearth's ClientApp, in process, with the run's
configuration: DP-SGD and its noise, the ledger, the pinned policy's checks, the
secure-aggregation rules and the egress guard are all the device's. A bundle can
change the campaign's configuration within what the device's policy allows; it
cannot change what runs. Every reply then carries only one of
``policy.replies``' codes when it is an error.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from logging import ERROR, INFO
from pathlib import Path
from typing import Final

from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.common import log
from flwr.common.constant import SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.protobuf.client import ProtobufClientInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import (
    pull_task_input,
    push_message,
    push_task_output,
)

from client.control.participation import admit, read_deployment, record
from client.control.policy_pin import device_policy
from client.deployment.bundle_trust import BundleRefused, RunClaim, admit_bundle
from client.deployment.governor import Governor, lower_priority
from client.deployment.patience import next_wait
from client.deployment.task_slots import Slot, slots_directory, try_acquire
from client.deployment.zygote_client import ChildProcess, start_process

# The device's own ClientApp, from the installed hearth: the only app code a device runs.
from client.learning.app import app as device_app
from client.learning.egress import EGRESS_ERROR_CODE
from client.storage.home import hearth_home
from policy.replies import BUNDLE_REFUSED, REFUSAL_REASONS, UNAVAILABLE, refusal_reason

# The executor's poll of its SuperNode for a task: soon after the last task (a round's
# next stage follows within seconds), then less often (client.deployment.patience).
SHORTEST_POLL_SECONDS: Final = 0.2
LONGEST_POLL_SECONDS: Final = 2.0
ENV_SECRET_FILE: Final = "HEARTH_SUPEREXEC_SECRET_FILE"  # noqa: S105 (a path, not a secret)
# The error codes a reply may carry; anything else becomes CLIENT_ERROR.
CLIENT_ERROR: Final = 1
ALLOWED_ERROR_CODES: Final = frozenset({*REFUSAL_REASONS, EGRESS_ERROR_CODE, CLIENT_ERROR})


def _runtime_client(
    address: str, interceptors: Sequence[ProtobufClientInterceptor]
) -> RuntimeHttpClient:
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,  # the Runtime API listens on loopback only
        root_certificates=None,
        interceptors=list(interceptors),
        retry_invoker=make_simple_http_retry_invoker(),
    )


def _governor_once_per_round(home: Path, run_id: int, server_round: str) -> str | None:
    """The governor's decision for this round (decided at its first message); a reason or None."""
    cached = read_deployment(home).get("governor", {})
    if cached.get("run_id") == run_id and cached.get("round") == server_round:
        return None if cached.get("allowed") else str(cached.get("reason"))
    decision = Governor(device_policy(home).governor).decide()  # the pinned policy's
    record(
        home,
        "governor",
        run_id=run_id,
        round=server_round,
        allowed=decision.allowed,
        reason=decision.reason,
    )
    return None if decision.allowed else decision.reason


def run_device_app(message: Message, context: Context) -> Message:
    """The device's own ClientApp on ``message``; an error keeps only a code a reply may carry."""
    reply = device_app(message, context)
    if not reply.has_error():
        return reply
    code = reply.error.code if reply.error.code in ALLOWED_ERROR_CODES else CLIENT_ERROR
    return Message(Error(code, refusal_reason(code)), reply_to=message)


@dataclass
class _Task:
    """What one task process has so far; the reply is pushed whatever happens."""

    message: Message | None = None
    context: Context | None = None
    reply: Message | None = None
    sub_status: str = SubStatus.FAILED
    details: str = "ClientApp task failed"
    exit_code: int = 1


def _decline(home: Path, task: _Task, run_id: int, server_round: str, reason: str) -> None:
    record(home, "decline", run_id=run_id, round=server_round, reason=reason)
    log(INFO, "hearth: declined round %s", server_round)
    assert task.message is not None
    # The reason stays on the laptop: the server gets one code for all of the employee's
    # and the laptop's reasons, so a decline says nothing about activity or power.
    task.reply = Message(Error(UNAVAILABLE, refusal_reason(UNAVAILABLE)), reply_to=task.message)
    task.details, task.exit_code = refusal_reason(UNAVAILABLE), 0


def _refuse(home: Path, task: _Task, run_id: int, refused: BundleRefused) -> None:
    record(home, "refusal", run_id=run_id, check=refused.reason.name, reason=str(refused))
    log(ERROR, "hearth: %s", refused)
    assert task.message is not None
    reply = Error(BUNDLE_REFUSED, refusal_reason(BUNDLE_REFUSED))
    task.reply = Message(reply, reply_to=task.message)
    task.details, task.exit_code = refusal_reason(BUNDLE_REFUSED), 2


def _run_gated(client: RuntimeHttpClient, home: Path, task: _Task) -> None:
    message, context, run, fab = pull_task_input(client)
    task.message, task.context = message, context
    server_round = message.metadata.group_id
    try:
        admit_bundle(
            home,
            fab.content,
            RunClaim(run.fab_id, run.fab_version, fab.hash_str),
            context.run_config,
        )
    except BundleRefused as refused:
        _refuse(home, task, run.run_id, refused)
        return
    admission = admit(home)
    if not admission.allowed:
        _decline(home, task, run.run_id, server_round, admission.reason)
        return
    decline = _governor_once_per_round(home, run.run_id, server_round)
    if decline is not None:
        _decline(home, task, run.run_id, server_round, decline)
        return
    lower_priority()
    task.reply = run_device_app(message, context)
    record(
        home,
        "round",
        run_id=run.run_id,
        round=server_round,
        message_type=message.metadata.message_type,
    )
    task.sub_status, task.details, task.exit_code = SubStatus.COMPLETED, "", 0


def run_task(runtime_api_address: str, token: str) -> int:
    """Run one ClientApp task behind hearth's gate; returns the process exit code."""
    client = _runtime_client(
        runtime_api_address,
        [
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
    )
    task = _Task()
    # As flwr-clientapp does: without heartbeats the SuperNode revokes the task's token
    # after about a minute, and a device that trained longer could not hand in its reply.
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    try:
        _run_gated(client, hearth_home(), task)
    except Exception as exc:  # reported as an error reply, never re-raised
        log(ERROR, "hearth: ClientApp task failed: %s", type(exc).__name__)
        if task.message is not None:
            code = CLIENT_ERROR
            task.reply = Message(Error(code, refusal_reason(code)), reply_to=task.message)
    finally:
        if task.reply is not None and task.context is not None:
            try:
                push_message(client, task.reply, task.context)
            except Exception:
                log(ERROR, "hearth: could not push the reply")
                task.exit_code = 3
        push_task_output(
            client=client, context=task.context, sub_status=task.sub_status, details=task.details
        )
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()
    return task.exit_code


def _superexec_interceptors() -> list[ProtobufClientInterceptor]:
    interceptors: list[ProtobufClientInterceptor] = [
        RuntimeVersionHttpInterceptor(component_name="SuperExec")
    ]
    secret_file = os.environ.get(ENV_SECRET_FILE)
    if secret_file:
        interceptors.append(
            SuperExecAuthHttpInterceptor(
                master_secret=Path(secret_file).read_bytes(),
                protected_methods=frozenset({"/flwr.proto.Runtime/AcquireTask"}),
            )
        )
    return interceptors


def _claim(
    client: RuntimeHttpClient, runtime_api_address: str, slot: Slot | None
) -> ChildProcess | None:
    """Claim one ClientApp task and start its process (holding ``slot``), or None if none."""
    response = client.AcquireTask(
        AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
    )
    if not (response.HasField("task") and response.token):
        return None
    command = [sys.executable, "-m", "client.deployment.runner", "task"]
    command += ["--runtime-api-address", runtime_api_address, "--token", response.token]
    return start_process(command, keep=() if slot is None else (slot.fd,))


def serve(runtime_api_address: str, stop: threading.Event | None = None) -> None:
    """Claim ClientApp tasks from the SuperNode and run each behind the gate."""
    client = _runtime_client(runtime_api_address, _superexec_interceptors())
    children: list[ChildProcess] = []
    last_task = time.monotonic()
    slots = slots_directory()
    try:
        while stop is None or not stop.is_set():
            children = [c for c in children if c.poll() is None]
            slot = None
            if slots is not None:
                slot = try_acquire(slots)
                if slot is None:
                    time.sleep(SHORTEST_POLL_SECONDS)  # the machine's task slots are all taken
                    continue
            try:
                child = _claim(client, runtime_api_address, slot)
            finally:
                if slot is not None:
                    slot.close()  # a task started holds its own copy of the lock
            if child is not None:
                children.append(child)
                last_task = time.monotonic()
                continue
            waited = time.monotonic() - last_task
            time.sleep(next_wait(waited, SHORTEST_POLL_SECONDS, LONGEST_POLL_SECONDS))
    finally:
        client.close()
        for child in children:
            child.terminate()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m client.deployment.runner serve|task``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["serve", "task"])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--token", default="")
    args = parser.parse_args(argv)
    if args.mode == "serve":
        serve(args.runtime_api_address)
        return 0
    return run_task(args.runtime_api_address, args.token)


if __name__ == "__main__":
    raise SystemExit(main())
