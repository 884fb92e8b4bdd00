"""Register many SuperNode keys through one Control API connection.

``flwr supernode register`` takes one key a process, and each process spends
seconds importing Flower before its one request (about 13 s a device on the
loaded two-core machine: minutes for a fleet). ``hearth-server up`` runs this
module once, in the same environment it gave ``flwr`` (its ``FLWR_HOME`` and the
``hearth`` connection), and it makes the same ``RegisterNode`` request
per key through Flower's own connection reader, key loader and client, printing
one JSON line per key in ``flwr``'s ``--format json`` shape plus the key's name:
``{"name": ..., "success": true, "node-id": ...}`` or
``{"name": ..., "success": false, "error-message": ...}``.

Usage: ``python -m server.node_registration CONNECTION KEY.pub [KEY.pub ...]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flwr.cli.flower_config import read_superlink_connection
from flwr.cli.supernode.register import try_load_public_key
from flwr.cli.utils import flwr_cli_exc_handler, init_http_client_from_connection
from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611


def register_keys(connection: str, keys: list[Path]) -> list[dict[str, object]]:
    """One outcome per key, in order; a refused key does not stop the others."""
    client = init_http_client_from_connection(read_superlink_connection(connection))
    outcomes: list[dict[str, object]] = []
    try:
        for key in keys:
            outcome: dict[str, object] = {"name": key.stem}
            try:
                with flwr_cli_exc_handler():
                    response = client.RegisterNode(
                        request=RegisterNodeRequest(
                            public_key=try_load_public_key(key), name=key.stem
                        )
                    )
                if response.node_id:
                    outcome |= {"success": True, "node-id": response.node_id}
                else:
                    outcome |= {"success": False, "error-message": "not registered"}
            except click.ClickException as exc:
                outcome |= {"success": False, "error-message": exc.format_message()}
            outcomes.append(outcome)
    finally:
        client.close()
    return outcomes


def main(argv: list[str]) -> int:
    """Register every key named on the command line; one JSON line each on stdout."""
    if len(argv) < 2:
        print("usage: python -m server.node_registration CONNECTION KEY.pub ...", file=sys.stderr)
        return 2
    for outcome in register_keys(argv[0], [Path(arg) for arg in argv[1:]]):
        print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
