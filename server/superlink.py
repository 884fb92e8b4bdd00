"""``flower-superlink`` with a SQLite busy timeout that outlasts a busy moment.

Flower 1.41 sets ``PRAGMA busy_timeout = 5000`` on every connection to the
SuperLink's SQLite state (``flwr.supercore.constant.SQLITE_PRAGMAS``) and has no
option to change it. When many laptops push their replies at once, a write can
wait longer than 5 s for the lock; SQLite then says "database is locked", the
push fails with HTTP 500 and that laptop's update is lost for the round. A
laptop's update is worth waiting for, so hearth runs the SuperLink through this
module, which raises the busy timeout and then hands over to Flower's own entry
point unchanged (same arguments, same behaviour otherwise).

Run as ``python -m server.superlink [flower-superlink arguments]``.
"""

from __future__ import annotations

import sys
from typing import Final

BUSY_TIMEOUT_MS: Final = 120_000
PROGRAM: Final = "flower-superlink"


class SuperLinkLaunchError(Exception):
    """Flower's SQLite settings are not where this module expects them."""


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


def main() -> None:
    """Start Flower's SuperLink with hearth's SQLite busy timeout."""
    try:
        raise_busy_timeout()
    except SuperLinkLaunchError as err:
        sys.exit(f"hearth: {err}")
    from flwr.superlink.cli import flower_superlink  # noqa: PLC0415

    sys.argv[0] = PROGRAM
    flower_superlink()


if __name__ == "__main__":
    main()
