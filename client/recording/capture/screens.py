"""Screen thumbnails, only with the ``screens`` modality: tiny, gray, rare, in memory.

A grab is reduced to at most 64x40 grayscale right away (the full-resolution
pixels never leave this function), at most once per ``interval`` seconds, and a
thumbnail is kept only when the screen changed since the last one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from policy.events import MAX_THUMBNAIL_HEIGHT, MAX_THUMBNAIL_WIDTH

if TYPE_CHECKING:
    import numpy as np

Grab = Callable[[], tuple[int, int, bytes]]  # (width, height, BGRA pixels)


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """The largest size within 64x40 that keeps the screen's aspect ratio."""
    scale = min(MAX_THUMBNAIL_WIDTH / width, MAX_THUMBNAIL_HEIGHT / height)
    return max(1, int(width * scale)), max(1, int(height * scale))


def downscale(width: int, height: int, bgra: bytes) -> tuple[int, int, bytes]:
    """BGRA pixels to a gray thumbnail by block averaging."""
    import numpy as np  # noqa: PLC0415 - only loaded when screens are granted

    out_w, out_h = thumbnail_size(width, height)
    image = np.frombuffer(bgra, dtype=np.uint8).reshape(height, width, 4)
    # Sample a grid a few times finer than the output, then average blocks of it.
    step_y, step_x = max(1, height // (out_h * 4)), max(1, width // (out_w * 4))
    sample = image[::step_y, ::step_x, :3].astype(np.uint16)
    gray = (sample[..., 0] * 29 + sample[..., 1] * 150 + sample[..., 2] * 77) >> 8  # BT.601
    rows, cols = gray.shape[0] // out_h, gray.shape[1] // out_w
    blocks = gray[: rows * out_h, : cols * out_w].reshape(out_h, rows, out_w, cols)
    return out_w, out_h, blocks.mean(axis=(1, 3)).astype(np.uint8).tobytes()


class MssGrab:
    """Grabs the primary monitor with mss (created lazily, on the thread that uses it)."""

    def __init__(self) -> None:
        """Nothing is grabbed until called."""
        self._mss: Any = None

    def __call__(self) -> tuple[int, int, bytes]:
        """One grab of the primary monitor."""
        if self._mss is None:
            import mss  # noqa: PLC0415

            self._mss = mss.mss()
        monitor = self._mss.monitors[1] if len(self._mss.monitors) > 1 else self._mss.monitors[0]
        shot = self._mss.grab(monitor)
        return int(shot.width), int(shot.height), bytes(shot.bgra)

    def close(self) -> None:
        """Release the grabber."""
        if self._mss is not None:
            self._mss.close()
            self._mss = None


class ThumbnailSampler:
    """Decides when to grab, and keeps a thumbnail only when the screen changed."""

    def __init__(self, grab: Grab, interval: float = 5.0, min_change: float = 2.0) -> None:
        """Grab at most every ``interval`` seconds; keep if mean change >= ``min_change``."""
        self._grab = grab
        self._interval = interval
        self._min_change = min_change
        self._last_grab = float("-inf")
        self._last: np.ndarray[Any, np.dtype[np.uint8]] | None = None

    def due(self, now: float) -> bool:
        """Whether a grab is allowed now."""
        return now - self._last_grab >= self._interval

    def sample(self, now: float) -> tuple[int, int, bytes] | None:
        """A new thumbnail, or None when not due or nothing changed."""
        if not self.due(now):
            return None
        self._last_grab = now
        import numpy as np  # noqa: PLC0415

        width, height, pixels = downscale(*self._grab())
        current = np.frombuffer(pixels, dtype=np.uint8)
        previous = self._last
        self._last = current
        if previous is not None and previous.shape == current.shape:
            change = float(np.abs(current.astype(np.int16) - previous.astype(np.int16)).mean())
            if change < self._min_change:
                return None
        return width, height, pixels
