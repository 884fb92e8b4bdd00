"""The forked child's side of ``client.deployment.zygote``: become ``python -m MODULE``.

What a fresh ``python -m MODULE ARGV`` would have that a fork of the zygote does not:
the requester's stdio, working directory and environment, a ``__main__`` run of the
module, and numpy's legacy global generator reseeded from the OS (a fork copies its
state; hearth's privacy randomness never uses it).
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Order:
    """What a freshly forked child is to run."""

    module: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    fds: list[int]


def become(order: Order) -> int:
    """In the forked child: become ``python -m module argv`` and run it."""
    for target, fd in enumerate(order.fds[:3]):  # the rest (a task slot) stays open as is
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(order.cwd)
    os.environ.clear()
    os.environ.update(order.env)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()  # a fork copies the legacy generator's state
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(line_buffering=stream.isatty())  # type: ignore[union-attr]
    sys.argv = ["-m", *order.argv]
    # A fresh `python -m` runs the module as __main__ next to no copy of itself.
    sys.modules.pop(order.module, None)
    runpy.run_module(order.module, run_name="__main__", alter_sys=True)
    return 0


__all__ = ["Order", "become"]
