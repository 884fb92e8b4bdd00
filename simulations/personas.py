"""Personas and the per-person habits drawn from them, so the data is non-IID."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from policy.events import Button


@dataclass(frozen=True)
class Persona:
    """A role: which workflows it runs, how often."""

    name: str
    workflows: dict[str, float]


PERSONAS: Final[tuple[Persona, ...]] = (
    Persona(
        "engineer",
        {"edit_build": 6, "copy_paste": 2, "review_ticket": 1, "email": 1, "chat": 2, "vault": 0.3},
    ),
    Persona(
        "designer",
        {"design": 6, "copy_paste": 1, "email": 1, "chat": 2, "meeting": 1, "files": 1},
    ),
    Persona(
        "analyst",
        {"spreadsheet": 6, "copy_paste": 3, "email": 1, "chat": 1, "report": 2},
    ),
    Persona(
        "manager",
        {"email": 5, "meeting": 3, "report": 2, "chat": 3, "hr": 1, "review_ticket": 1},
    ),
    Persona(
        "support",
        {"support_ticket": 7, "copy_paste": 1, "chat": 2, "email": 1, "vault": 0.3},
    ),
)


@dataclass(frozen=True)
class Habits:
    """How one person works: the same role, done their own way."""

    persona: Persona
    workflow_weights: dict[str, float]
    seconds_per_key: float
    uses_shortcuts: float  # probability of a shortcut rather than a menu click
    menu_cell: tuple[float, float]
    content_cell: tuple[float, float]
    submit_cell: tuple[float, float]
    button_bias: Button
    scroll_length: int
    build_failure_rate: float
    words_per_burst: int
    idle_rate: float
    checks_output: float
    paste_target: dict[str, str]  # where this person pastes what they copy from each app
    follow_up: dict[str, str]  # the workflow this person usually does next
    # What this person does first thing and on coming back from a break (mail, chat...).
    return_routine: tuple[str, ...] = ()


COPY_SOURCES: Final = ("firefox", "writer", "thunderbird", "calc", "code")


def _jitter_cell(
    rng: random.Random, x: float, y: float, spread: float = 0.2
) -> tuple[float, float]:
    return (
        min(0.99, max(0.0, x + rng.uniform(-spread, spread))),
        min(0.99, max(0.0, y + rng.uniform(-spread, spread))),
    )


def draw_habits(persona: Persona, rng: random.Random) -> Habits:
    """Perturb a persona into one person's habits."""
    weights = {k: w * rng.lognormvariate(0.0, 0.6) for k, w in persona.workflows.items()}
    return Habits(
        persona=persona,
        workflow_weights=weights,
        seconds_per_key=rng.uniform(0.08, 0.25),
        uses_shortcuts=rng.uniform(0.3, 0.95),
        menu_cell=_jitter_cell(rng, 0.1, 0.05, spread=0.05),  # apps put menus where they do
        content_cell=_jitter_cell(rng, 0.5, 0.5, spread=0.1),
        submit_cell=_jitter_cell(rng, 0.85, 0.9),
        button_bias=Button.RIGHT if rng.random() < 0.15 else Button.LEFT,
        scroll_length=rng.randint(1, 5),
        build_failure_rate=rng.uniform(0.1, 0.5),
        words_per_burst=rng.randint(2, 8),
        idle_rate=rng.uniform(0.02, 0.1),
        checks_output=rng.uniform(0.3, 0.9),
        paste_target={
            source: rng.choice([t for t in COPY_SOURCES if t != source]) for source in COPY_SOURCES
        },
        follow_up={name: rng.choice(sorted(weights)) for name in sorted(weights)},
        return_routine=_return_routine(weights, rng),
    )


def _return_routine(weights: dict[str, float], rng: random.Random) -> tuple[str, ...]:
    """Catching up after a break: mail and chat, in this person's order, then maybe their main task.

    Drawn last, so the habits drawn before it are those of the generator without a rhythm.
    """
    catch_up: list[str] = [w for w in ("email", "chat") if w in weights]
    rng.shuffle(catch_up)
    routine = catch_up[: rng.randint(1, max(1, len(catch_up)))]
    if rng.random() < 0.5:
        routine.append(max(sorted(weights), key=weights.__getitem__))
    return tuple(routine)
