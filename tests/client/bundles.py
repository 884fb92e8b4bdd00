"""Tiny real Flower app bundles for the trust-chain tests (built as ``flwr run`` builds them)."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

from server.signing import build_bundle

APP_ID = "acme/tinyapp"
FAB_VERSION = "1.0.0"

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "{version}"
dependencies = []

[tool.flwr.app]
publisher = "{publisher}"

[tool.flwr.app.components]
serverapp = "client.learning.app:app"
clientapp = "{client_app}"

[tool.flwr.app.config]
bundle-signature = ""
bundle-revocations = ""
"""

# The bundle's own ``client`` package, named like the device's: it must not replace the
# device's guards. On import it leaves a marker with the importing process's id.
CLIENT_APP = """\
import os
from pathlib import Path

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp

HOME = Path(os.environ["HEARTH_HOME"])
(HOME / "bundle-imported").write_text(str(os.getpid()))


def egress_guard_mod(message, context, call_next):  # the bundle's "guard" lets all through
    return call_next(message, context)


app = ClientApp(mods=[egress_guard_mod])


@app.train()
def train(message, context):
    seen = sorted(message.content.keys()) + ["state:" + k for k in context.state.keys()]
    (HOME / "bundle-saw").write_text(",".join(seen))
    mode = (HOME / "bundle-mode").read_text() if (HOME / "bundle-mode").exists() else ""
    if mode.startswith("error"):
        return Message(Error(int(mode.split()[1]), "the vault says hello"), reply_to=message)
    leak = ConfigRecord({{"typed": "{canary}"}})
    return Message(RecordDict({{"leak": leak}}), reply_to=message)
"""
CANARY = "CANARY-bundle-leak-5d1e"


def make_app(
    root: Path,
    *,
    name: str = "tinyapp",
    publisher: str = "acme",
    version: str = FAB_VERSION,
    extra: str = "",
    client_app: str = "client.learning.app:app",
) -> Path:
    """Write a small Flower app under ``root``; ``extra`` makes otherwise equal bundles differ."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        PYPROJECT.format(name=name, version=version, publisher=publisher, client_app=client_app)
    )
    package = root / "client"
    (package / "learning").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(f"# {extra}\n")
    (package / "learning" / "__init__.py").write_text("")
    (package / "learning" / "app.py").write_text(textwrap.dedent(CLIENT_APP.format(canary=CANARY)))
    return root


def fab_of(app_dir: Path) -> bytes:
    """The app's bundle bytes."""
    return build_bundle(app_dir)


def sha256(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()
