"""The bundle host: the one process on a device where the bundle's code runs.

``client.runner``'s task process is the device's own code: it verified the
bundle and holds the device's guards (secure aggregation, egress guard,
refusals), the Runtime API token and the run's context. When a message needs the
bundle (a training or evaluation step), it calls ``run_in_host``, which starts
``python -m client.bundle_host APP_DIR APP_ID VERSION`` and hands it the message
and a context without the device's state on stdin. The host forgets hearth's own
modules, loads the ClientApp from the installed directory it was given (Flower's
loader, which also checks that directory's app id and version) and writes the
reply back on stdout. The device keeps only the reply's content or its error
code and rebuilds the reply's metadata itself; its guards then see it before
anything leaves.

So the bundle never imports into the process that holds the guards, never holds
the token that talks to the SuperNode, and never sees the SecAgg+ secrets in the
device's context. It is still code the organisation signed running as the
employee: it can read what the employee's account can read (the vault, with the
passphrase in its environment). The guards bound what leaves through Flower, not
what the bundle reads or what else it could do on the laptop.

This module imports nothing of hearth, so the host process has nothing of the
device's to confuse with the bundle's modules of the same names.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, Final

from flwr.app import Context, Message, RecordDict
from flwr.app.error import Error
from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    message_from_proto,
    message_to_proto,
)
from flwr.proto.message_pb2 import Context as ProtoContext
from flwr.proto.message_pb2 import Message as ProtoMessage

HOST_MODULE: Final = "client.bundle_host"
# Set in the host's environment: the device's own guard, outside, keeps the upload history.
ENV_IN_BUNDLE_HOST: Final = "HEARTH_IN_BUNDLE_HOST"
# Top-level packages of hearth: the host forgets its own copies before loading the bundle's.
HEARTH_PACKAGES: Final = frozenset(
    {"client", "policy", "privacy", "server", "strategies", "simulations"}
)
_LENGTH: Final = struct.Struct(">Q")


class BundleHostError(Exception):
    """The bundle host failed or answered with something that is not a reply."""


def _frame(*parts: bytes) -> bytes:
    return b"".join(_LENGTH.pack(len(part)) + part for part in parts)


def _unframe(data: bytes, count: int) -> list[bytes]:
    parts, offset = [], 0
    for _ in range(count):
        if offset + _LENGTH.size > len(data):
            raise BundleHostError("truncated input")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + length > len(data):
            raise BundleHostError("truncated input")
        parts.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise BundleHostError("trailing input")
    return parts


def stateless(context: Context) -> Context:
    """The context the bundle sees: the run's and node's config, none of the device's state."""
    return Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config=dict(context.node_config),
        state=RecordDict(),
        run_config=dict(context.run_config),
    )


def host_command(app_dir: Path, app_id: str, fab_version: str) -> list[str]:
    """The bundle host's command line."""
    return [sys.executable, "-m", HOST_MODULE, str(app_dir), app_id, fab_version]


def run_in_host(
    app_dir: Path,
    app_id: str,
    fab_version: str,
    message: Message,
    context: Context,
    env: Mapping[str, str],
    withhold: Collection[str] = (),
) -> Message:
    """Run the bundle's ClientApp on ``message`` in a host process; the device's reply to it.

    The records named in ``withhold`` are taken out of the message the bundle
    sees. The reply is rebuilt here: the bundle's content, or its error code (the
    device's guards decide what the code may say). Raises ``BundleHostError``
    if the host does not answer.
    """
    proto = message_to_proto(message)
    kept = [item for item in proto.content.items if item.key not in withhold]
    del proto.content.items[:]
    proto.content.items.extend(kept)
    request = _frame(
        proto.SerializeToString(),
        context_to_proto(stateless(context)).SerializeToString(),
    )
    done = subprocess.run(
        host_command(app_dir, app_id, fab_version),
        input=request,
        stdout=subprocess.PIPE,
        env=dict(env),
        check=False,
    )
    if done.returncode != 0:
        raise BundleHostError(f"the bundle host exited with {done.returncode}")
    try:
        (reply_bytes,) = _unframe(done.stdout, 1)
        reply = message_from_proto(ProtoMessage.FromString(reply_bytes))
    except Exception as exc:  # protobuf raises its own DecodeError
        raise BundleHostError(f"the bundle host's reply is unreadable: {exc}") from None
    if reply.has_error():
        return Message(Error(code=reply.error.code, reason=""), reply_to=message)
    return Message(reply.content, reply_to=message)


def _forget_hearth_modules() -> None:
    """Forget the device's copies of hearth's packages, so the bundle's own are imported."""
    for name in list(sys.modules):
        if name.split(".", 1)[0] in HEARTH_PACKAGES:
            del sys.modules[name]


def serve_one(app_dir: str, app_id: str, fab_version: str, request: bytes, out: BinaryIO) -> None:
    """Host side: load the bundle's ClientApp, run it on the framed request, write the reply."""
    from flwr.clientapp.utils import get_load_client_app_fn  # noqa: PLC0415

    message_bytes, context_bytes = _unframe(request, 2)
    message = message_from_proto(ProtoMessage.FromString(message_bytes))
    context = context_from_proto(ProtoContext.FromString(context_bytes))
    _forget_hearth_modules()
    load = get_load_client_app_fn(default_app_ref="", app_path=app_dir, multi_app=True)
    client_app = load(app_id, fab_version, "")
    reply = client_app(message=message, context=context)
    out.write(_frame(message_to_proto(reply).SerializeToString()))
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m client.bundle_host APP_DIR APP_ID VERSION`` (request on stdin)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m client.bundle_host APP_DIR APP_ID VERSION", file=sys.stderr)
        return 2
    # The reply owns stdout; whatever the bundle prints goes to stderr instead.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    serve_one(args[0], args[1], args[2], sys.stdin.buffer.read(), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
