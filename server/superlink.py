"""``flower-superlink`` as hearth runs it: a longer SQLite timeout, and Fleet-only for laptops.

Two changes to Flower's own entry point, everything else unchanged:

* **SQLite busy timeout.** Flower 1.41 sets ``PRAGMA busy_timeout = 5000`` on every
  connection to the SuperLink's SQLite state (``flwr.supercore.constant.SQLITE_PRAGMAS``)
  and has no option to change it. When many laptops push their replies at once, a write
  can wait longer than 5 s for the lock; SQLite then says "database is locked", the push
  fails with HTTP 500 and that laptop's update is lost for the round. A laptop's update
  is worth waiting for, so the busy timeout is raised.
* **Only the Fleet API on the laptops' address.** Flower serves Fleet, Control and
  Runtime on one address, and its Control API authenticates no one without Flower's
  enterprise plugin. Here Flower's own ``--host``/``--port`` must be loopback (the ML
  team's ``flwr run`` and Flower's SuperExec use it), and the same app is also served
  on ``--fleet-host``/``--fleet-port``, where ``server.fleet_only`` answers 403 to
  everything but ``/v1/fleet/*``.

Run as ``python -m server.superlink --fleet-host H --fleet-port P [flower-superlink args]``.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

BUSY_TIMEOUT_MS: Final = 120_000
PROGRAM: Final = "flower-superlink"
CONTROL_HOST: Final = "127.0.0.1"
FLOWER_DEFAULT_PORT: Final = 8000  # flwr.supercore.constant.SUPERLINK_UVICORN_DEFAULT_PORT


class SuperLinkLaunchError(Exception):
    """Flower is not what this module expects, or the addresses are unsafe; one line."""


@dataclass(frozen=True)
class Addresses:
    """Where the SuperLink listens: everything on loopback, the Fleet API for laptops."""

    control: tuple[str, int]
    fleet: tuple[str, int]


def split_arguments(argv: Sequence[str]) -> tuple[Addresses, list[str]]:
    """Split ``argv``: hearth's ``--fleet-host``/``--fleet-port``, and the rest for Flower.

    Flower's ``--host`` must be 127.0.0.1 (its Control and Runtime APIs are served
    there) and the Fleet port must differ from Flower's port.
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--fleet-host", default=None)
    parser.add_argument("--fleet-port", type=int, default=None)
    ours, rest = parser.parse_known_args(list(argv))
    flower = argparse.ArgumentParser(add_help=False)
    flower.add_argument("--host", default=CONTROL_HOST)
    flower.add_argument("--port", type=int, default=FLOWER_DEFAULT_PORT)
    theirs, _ = flower.parse_known_args(rest)
    if ours.fleet_host is None or ours.fleet_port is None:
        raise SuperLinkLaunchError(
            "--fleet-host and --fleet-port are required: the laptops' address serves the "
            "Fleet API only"
        )
    if theirs.host != CONTROL_HOST:
        raise SuperLinkLaunchError(
            f"--host must be {CONTROL_HOST}: Flower's Control and Runtime APIs authenticate "
            "no one and are served on loopback only (laptops use --fleet-host)"
        )
    if ours.fleet_port == theirs.port:
        raise SuperLinkLaunchError("--fleet-port must differ from the Control port (--port)")
    return Addresses((theirs.host, theirs.port), (ours.fleet_host, ours.fleet_port)), rest


def raise_busy_timeout(busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
    """Make every new SuperLink SQLite connection wait up to ``busy_timeout_ms`` for a lock."""
    from flwr.supercore import sql_mixin  # noqa: PLC0415  (Flower is heavy; only here)

    pragmas = tuple(getattr(sql_mixin, "SQLITE_PRAGMAS", ()))
    if "busy_timeout" not in dict(pragmas):
        raise SuperLinkLaunchError(
            "this Flower version no longer sets SQLite's busy_timeout in"
            " flwr.supercore.sql_mixin.SQLITE_PRAGMAS; update server/superlink.py"
        )
    sql_mixin.SQLITE_PRAGMAS = tuple(  # type: ignore[attr-defined,assignment]
        (name, str(busy_timeout_ms) if name == "busy_timeout" else value) for name, value in pragmas
    )


def install_fleet_only(addresses: Addresses) -> None:
    """Put ``FleetOnlyMiddleware`` outermost in every SuperLink app Flower creates."""
    from flwr.superlink import extensions  # noqa: PLC0415
    from starlette.middleware import Middleware  # noqa: PLC0415

    from server.fleet_only import FleetOnlyMiddleware  # noqa: PLC0415

    flowers_own = extensions.get_middleware

    def get_middleware() -> tuple[Middleware, ...]:
        return (Middleware(FleetOnlyMiddleware, control=addresses.control), *flowers_own())

    extensions.get_middleware = get_middleware


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SuperLinkLaunchError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def two_socket_run(addresses: Addresses) -> Callable[..., None]:
    """A ``uvicorn.run`` that serves Flower's app on the control and the Fleet address."""
    import uvicorn  # noqa: PLC0415

    from server.fleet_only import FleetOnlyMiddleware  # noqa: PLC0415

    def run(app: Any, **kwargs: Any) -> None:
        if (kwargs.get("host"), kwargs.get("port")) != addresses.control:
            sys.exit(
                f"hearth: Flower serves on {kwargs.get('host')}:{kwargs.get('port')}, "
                f"not {addresses.control[0]}:{addresses.control[1]}; refusing to start"
            )
        if not any(m.cls is FleetOnlyMiddleware for m in getattr(app, "user_middleware", ())):
            sys.exit("hearth: the SuperLink app lacks the Fleet-only middleware; refusing to start")
        config = uvicorn.Config(app, **kwargs)
        server = uvicorn.Server(config)
        try:
            sockets = [_bind(*addresses.control), _bind(*addresses.fleet)]
        except SuperLinkLaunchError as err:
            sys.exit(f"hearth: {err}")
        print(
            f"hearth: Fleet API only on {addresses.fleet[0]}:{addresses.fleet[1]}; Control "
            f"and Runtime APIs on {addresses.control[0]}:{addresses.control[1]} only",
            flush=True,
        )
        server.run(sockets=sockets)
        if not server.started:
            sys.exit(3)  # uvicorn's STARTUP_FAILURE

    return run


def main() -> None:
    """Start Flower's SuperLink with hearth's SQLite timeout and Fleet-only laptop address."""
    import uvicorn  # noqa: PLC0415

    if not {"-h", "--help", "-V", "--version"} & set(sys.argv[1:]):
        try:
            addresses, rest = split_arguments(sys.argv[1:])
            raise_busy_timeout()
            install_fleet_only(addresses)
        except SuperLinkLaunchError as err:
            sys.exit(f"hearth: {err}")
        setattr(uvicorn, "run", two_socket_run(addresses))  # noqa: B010 (Flower calls it)
        sys.argv[1:] = rest
    from flwr.superlink.cli import flower_superlink  # noqa: PLC0415

    sys.argv[0] = PROGRAM
    flower_superlink()


if __name__ == "__main__":
    main()
