"""The anchor of the recorder benchmark: what a recorder costs with no thought put in.

pynput's keyboard and mouse listeners, one JSON line written per event (every
press, release, move, click and scroll), no gates, no coalescing, no encryption.
``python -m simulations.benchmarks.naive_recorder OUT`` writes ``OUT`` and touches
``OUT.ready`` once both listeners run; SIGTERM stops it.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    """Record to the file named by the first argument until SIGTERM."""
    from pynput import keyboard, mouse  # noqa: PLC0415 - needs a display

    out_path = Path((argv or sys.argv[1:])[0])
    out = out_path.open("a", buffering=1)  # line-buffered: one write per event
    lock = threading.Lock()

    def write(record: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps({"t": time.time(), **record}) + "\n")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with (
        keyboard.Listener(
            on_press=lambda key: write({"k": "press", "key": str(key)}),
            on_release=lambda key: write({"k": "release", "key": str(key)}),
        ) as keys,
        mouse.Listener(
            on_move=lambda x, y: write({"k": "move", "x": x, "y": y}),
            on_click=lambda x, y, b, p: write({"k": "click", "x": x, "y": y, "b": str(b), "p": p}),
            on_scroll=lambda x, y, dx, dy: write({"k": "scroll", "x": x, "y": y, "dy": dy}),
        ) as pointer,
    ):
        keys.wait()
        pointer.wait()
        out_path.with_name(out_path.name + ".ready").touch()
        stop.wait()
    out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
