"""What was typed, as it is kept: runs of a key class, and redacted text.

Keystrokes are never stored one by one: consecutive keys of one class become
one ``KeyRun`` (class, count, start and duration in whole seconds), closed by
another class, a shortcut, a click, a focus change, a gap or ``key_run_idle``
seconds without a key; modifier keys alone are not counted (shift+a is a
letter), and the spaces between words continue a run of letters.

Text (only with the text modality) goes through the redactor before anything is
buffered. It runs over the whole unsealed text, so a number typed in groups
across idle pauses is matched as one, and text is sealed only once
``text_window`` characters have passed it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from client.recording.capture.keys import Stroke
from client.recording.gates import CaptureState
from client.recording.redact import apply as apply_redaction
from client.recording.redact import find as find_pii
from policy.events import MAX_TEXT_LENGTH, KeyClass


@dataclass
class OpenRun:
    """The key run being typed: kept in memory until it closes, then one ``KeyRun``."""

    key_class: KeyClass
    start: float
    last: float
    count: int
    state: CaptureState


class KeyRuns:
    """The open run, and when it closes."""

    def __init__(self, idle: float, emit: Callable[[OpenRun], None]) -> None:
        """Runs close after ``idle`` seconds without a key; ``emit`` keeps a closed one."""
        self.open: OpenRun | None = None
        self._idle = idle
        self._emit = emit

    def key(self, key_class: KeyClass, t: float, state: CaptureState, allowed: bool) -> None:
        """Count one key into the open run, or close it and open another."""
        if not allowed:
            self.close()  # what was typed while allowed; none of this key
            return
        run = self.open
        if key_class is KeyClass.SPACE and run is not None and run.key_class is KeyClass.LETTER:
            key_class = KeyClass.LETTER  # spaces between words continue the letters
        if (
            run is not None
            and run.key_class is key_class
            and t - run.last < self._idle
            and (run.state is state or run.state == state)
        ):
            run.last = t
            run.count += 1
            return
        self.close()
        self.open = OpenRun(key_class, t, t, 1, state)

    def close(self) -> None:
        """Keep the open run, if any."""
        run, self.open = self.open, None
        if run is not None:
            self._emit(run)

    def close_idle(self, now: float) -> None:
        """Close the open run once ``idle`` passed since its last key."""
        if self.open is not None and now - self.open.last >= self._idle:
            self.close()


class TextAssembler:
    """Typed text, redacted before it is kept."""

    def __init__(self, chunk: int, window: int, emit: Callable[[float, str], None]) -> None:
        """``emit(start, text)`` keeps a redacted piece; ``chunk`` caps what waits in memory."""
        self.text: list[str] = []
        self.start = self.last = 0.0
        self._chunk = chunk
        self._window = min(window, chunk // 2)
        self._emit = emit

    def key(self, stroke: Stroke, t: float, allowed: bool) -> None:
        """One key: a character, a deletion, Enter; or, when text is not allowed now, an end."""
        if not allowed:
            # Not allowed now (not granted, sensitive app, password prompt): end what
            # was typed while it was allowed, and keep none of this key.
            self.end(t, everything=True)
            return
        text = self.text
        if not text:
            self.start = t
        self.last = t
        if stroke.typed is not None:
            text.append(stroke.typed)
        elif stroke.key_class is KeyClass.EDIT:
            if text:
                text.pop()
        elif stroke.key_class is KeyClass.ENTER:
            text.append("\n")
            self.end(t, everything=True)
        if len(self.text) >= self._chunk:
            self.end(t, everything=False)

    def idle(self, now: float, after: float) -> None:
        """Seal what the window passed once ``after`` seconds went by without a key."""
        if self.text and now - self.last >= after:
            self.end(now, everything=False)
            self.last = now

    def end(self, now: float, everything: bool) -> None:
        """Redact and keep the typed text that is sealed.

        All of it at a hard boundary (``everything``: Enter, another app, a gate
        closing, pause, stop), otherwise only what lies at least ``window``
        characters before the last key. A cut never falls inside a find.
        """
        if not self.text:
            return
        typed = "".join(self.text)
        spans = find_pii(typed)
        cut = len(typed)
        if not everything:
            cut -= self._window
            for span in spans:
                if span.start < cut < span.end:
                    cut = span.start
            if cut <= 0:
                return  # the window has not passed over any of it yet
        self.text = list(typed[cut:])
        clean = apply_redaction(typed[:cut], [s for s in spans if s.end <= cut])
        clean = clean[:MAX_TEXT_LENGTH]
        if clean.strip():
            self._emit(float(round(self.start)), clean)
        self.start = now
