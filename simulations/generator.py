"""Seeded synthetic employees: the same (seed, employee) always gives the same day.

Randomness comes from ``random.Random`` seeded with a string (hashed with
SHA-512 by the standard library), never from the global RNG or the salted
built-in ``hash``, so streams are identical across processes and machines.

The day has a rhythm (an assumption of the synthetic data, stated in the README
and docs/design.md): each person starts the day, and comes back from every break
(and from lunch, half-way through), with their own catch-up routine (mail and
chat in their order, sometimes then their main task) before their usual mix of
work. Real desktop days look like this; a model that reads the gaps between
actions can tell "just came back" from "in the middle of a task", an n-gram of
the last actions cannot. ``rhythm=False`` gives the earlier generator's days
(same habits, no routine, no lunch), for comparison.
"""

from __future__ import annotations

import random
from collections import deque

from policy.events import Event
from simulations.personas import PERSONAS, Habits, Persona, draw_habits
from simulations.workflows import WORKFLOWS, Emitter

BANKING_WEIGHT = 0.2
FOLLOW_UP_RATE = 0.6
LUNCH_AFTER_HOURS = 4.0
LUNCH_MINUTES = (30.0, 60.0)


def _rng(seed: int, employee_id: int, purpose: str) -> random.Random:
    return random.Random(f"hearth-sim:{purpose}:{seed}:{employee_id}")


def employee_persona(employee_id: int, seed: int) -> Persona:
    """Roles rotate through the personas so every population has all of them."""
    del seed
    return PERSONAS[employee_id % len(PERSONAS)]


def employee_habits(employee_id: int, seed: int) -> Habits:
    """Draw one person's own way of doing their role."""
    return draw_habits(employee_persona(employee_id, seed), _rng(seed, employee_id, "habits"))


def generate_employee(
    employee_id: int, seed: int, hours: float = 8.0, rhythm: bool = True
) -> list[Event]:
    """One employee's recorded events over ``hours`` of work (already minimized)."""
    habits = employee_habits(employee_id, seed)
    rng = _rng(seed, employee_id, "day")
    emitter = Emitter(habits=habits, rng=rng)
    weights = {**habits.workflow_weights, "banking": BANKING_WEIGHT}
    names = sorted(weights)
    cumulative = [weights[n] for n in names]
    end = hours * 3600.0
    lunch = LUNCH_AFTER_HOURS * 3600.0 if rhythm and hours > LUNCH_AFTER_HOURS + 1 else end
    routine: deque[str] = deque(habits.return_routine if rhythm else ())
    name = names[0]
    while emitter.t < end:
        if routine:
            name = routine.popleft()
        # Work has momentum: people usually follow one task with the same next one.
        elif name in habits.follow_up and rng.random() < FOLLOW_UP_RATE:
            name = habits.follow_up[name]
        else:
            (name,) = rng.choices(names, weights=cumulative)
        WORKFLOWS[name](emitter)
        emitter.think()
        took_break = emitter.maybe_idle()
        if emitter.t >= lunch:
            emitter.take_break(LUNCH_MINUTES[0] * 60, LUNCH_MINUTES[1] * 60)
            lunch, took_break = end, True
        if rhythm and took_break:
            routine = deque(habits.return_routine)
    return emitter.events
