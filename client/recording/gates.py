"""Capture gates: each one small, testable alone, and stacked in one visible place.

A gate takes an event and the capture state and returns the event (possibly
reduced) or None to drop it. ``GATES`` is the stack every captured event passes,
in order, before anything is buffered or written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from client.control.consent import ConsentRecord
from policy.events import (
    MODALITY_OF,
    Event,
    Key,
    KeyClass,
    KeyRun,
    Paused,
    Resumed,
    ShortcutPressed,
    Suppressed,
    Text,
)


@dataclass(frozen=True)
class CaptureState:
    """What the gates need to know at the moment an event is captured."""

    consent: ConsentRecord | None
    paused: bool = False
    sensitive_app_in_front: bool = False
    secure_input: bool = False


Gate = Callable[[Event, CaptureState], Event | None]


def consent_gate(event: Event, state: CaptureState) -> Event | None:
    """Drop anything whose modality is not consented to (markers need no consent)."""
    modality = MODALITY_OF[event.kind]
    if modality is None:
        return event if state.consent is not None and state.consent.active else None
    return event if state.consent is not None and state.consent.allows(modality) else None


def pause_gate(event: Event, state: CaptureState) -> Event | None:
    """While paused, only the pause and resume markers themselves are kept."""
    if state.paused and not isinstance(event, Paused | Resumed):
        return None
    return event


def sensitive_app_gate(event: Event, state: CaptureState) -> Event | None:
    """While a sensitive app is in front, keep only the suppressed gap (and markers)."""
    if state.sensitive_app_in_front and not isinstance(event, Suppressed | Paused | Resumed):
        return None
    return event


def secure_input_gate(event: Event, state: CaptureState) -> Event | None:
    """In password fields and secure input mode, no keys or text at all."""
    if state.secure_input and isinstance(event, Key | KeyRun | Text | ShortcutPressed):
        return None
    return event


GATES: Final[tuple[Gate, ...]] = (consent_gate, pause_gate, sensitive_app_gate, secure_input_gate)


def apply_gates(event: Event, state: CaptureState, gates: tuple[Gate, ...] = GATES) -> Event | None:
    """Pass ``event`` through every gate; None as soon as one drops it."""
    current: Event | None = event
    for gate in gates:
        if current is None:
            return None
        current = gate(current, state)
    return current


_RUN_PROBE: Final = KeyRun(0, 0.0, KeyClass.LETTER, 1, 0.0)
_TEXT_PROBE: Final = Text(0, 0.0, "")


class States:
    """Capture states reused while nothing in them changes, and the gates' verdict on typing.

    The writer asks for a state per queued event and whether key runs and text
    pass in it per key; building and gating afresh each time was a fair share of
    the recorder's CPU.
    """

    def __init__(self) -> None:
        """Nothing cached."""
        self._states: dict[tuple[bool, bool], CaptureState] = {}
        self._probe: tuple[CaptureState, bool, bool] | None = None

    def get(
        self, consent: ConsentRecord | None, paused: bool, sensitive: bool, secure: bool
    ) -> CaptureState:
        """``CaptureState(consent, paused, sensitive, secure)``, the same object as last time."""
        cached = self._states.get((sensitive, secure))
        if cached is None or cached.consent is not consent or cached.paused != paused:
            cached = CaptureState(consent, paused, sensitive, secure)
            self._states[(sensitive, secure)] = cached
        return cached

    def typing_allowed(self, state: CaptureState) -> tuple[bool, bool]:
        """Whether a key run and text pass the gates in ``state`` (asked once per state)."""
        probe = self._probe
        if probe is None or probe[0] is not state:
            runs = apply_gates(_RUN_PROBE, state) is not None
            probe = self._probe = (state, runs, apply_gates(_TEXT_PROBE, state) is not None)
        return probe[1], probe[2]
