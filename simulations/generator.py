"""Seeded synthetic employees: the same (seed, employee) always gives the same day.

Randomness comes from ``random.Random`` seeded with a string (hashed with
SHA-512 by the standard library), never from the global RNG or the salted
built-in ``hash``, so streams are identical across processes and machines.
"""

from __future__ import annotations

import random

from policy.events import Event
from simulations.personas import PERSONAS, Habits, Persona, draw_habits
from simulations.workflows import WORKFLOWS, Emitter

BANKING_WEIGHT = 0.2
FOLLOW_UP_RATE = 0.6


def _rng(seed: int, employee_id: int, purpose: str) -> random.Random:
    return random.Random(f"hearth-sim:{purpose}:{seed}:{employee_id}")


def employee_persona(employee_id: int, seed: int) -> Persona:
    """Roles rotate through the personas so every population has all of them."""
    del seed
    return PERSONAS[employee_id % len(PERSONAS)]


def employee_habits(employee_id: int, seed: int) -> Habits:
    """Draw one person's own way of doing their role."""
    return draw_habits(employee_persona(employee_id, seed), _rng(seed, employee_id, "habits"))


def generate_employee(employee_id: int, seed: int, hours: float = 8.0) -> list[Event]:
    """One employee's recorded events over ``hours`` of work (already minimized)."""
    habits = employee_habits(employee_id, seed)
    rng = _rng(seed, employee_id, "day")
    emitter = Emitter(habits=habits, rng=rng)
    weights = {**habits.workflow_weights, "banking": BANKING_WEIGHT}
    names = sorted(weights)
    cumulative = [weights[n] for n in names]
    end = hours * 3600.0
    name = names[0]
    while emitter.t < end:
        # Work has momentum: people usually follow one task with the same next one.
        if name in habits.follow_up and rng.random() < FOLLOW_UP_RATE:
            name = habits.follow_up[name]
        else:
            (name,) = rng.choices(names, weights=cumulative)
        WORKFLOWS[name](emitter)
        emitter.think()
        emitter.maybe_idle()
    return emitter.events
