"""Capture sources: keys, pointer, the app in front, screens; each one small.

Backends are imported lazily (pynput, python-xlib and mss need a display), so
importing this package never touches the OS.
"""

from __future__ import annotations

from client.recording.capture.focus import (
    FocusBackend,
    NoDisplayError,
    WindowInfo,
    open_focus_backend,
)
from client.recording.capture.keys import KeyInterpreter, RawKey, Stroke, classify
from client.recording.capture.listener import InputSource, PynputSource
from client.recording.capture.pointer import MoveCoalescer, ScreenBounds
from client.recording.capture.screens import MssGrab, ThumbnailSampler

__all__ = [
    "FocusBackend",
    "InputSource",
    "KeyInterpreter",
    "MoveCoalescer",
    "MssGrab",
    "NoDisplayError",
    "PynputSource",
    "RawKey",
    "ScreenBounds",
    "Stroke",
    "ThumbnailSampler",
    "WindowInfo",
    "classify",
    "open_focus_backend",
]
