"""The employee's local dashboard: state, controls and history, on 127.0.0.1 only.

``create_app`` builds the FastAPI app behind a ``Guard`` (per-install token,
same-origin and CSRF checks); ``serve`` runs it on a free loopback port.
"""

from client.dashboard.app import create_app
from client.dashboard.auth import Guard, load_or_create_token
from client.dashboard.server import LOOPBACK, bind_loopback, serve

__all__ = ["LOOPBACK", "Guard", "bind_loopback", "create_app", "load_or_create_token", "serve"]
