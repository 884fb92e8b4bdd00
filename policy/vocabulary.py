"""The action vocabulary: how events become the tokens the policy predicts.

A token is a coarse action: a click (button x 3x3 screen cell), a scroll
direction, a run of keys of one class, a named shortcut, a switch to an app
category, or a suppressed gap. Pointer moves, thumbnails, text and pause markers
carry no action and are dropped; a run of keys of the same class is one token,
and spaces inside a run of letters continue it, so "typed a sentence" is one
action rather than forty; likewise a run of scroll notches is one scroll.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from policy.events import (
    AppCategory,
    Button,
    Click,
    Event,
    Focus,
    Key,
    KeyClass,
    KeyRun,
    Scroll,
    Shortcut,
    ShortcutPressed,
    Suppressed,
)

PAD: Final = "<pad>"
SUPPRESSED: Final = "suppressed"
GRID: Final = 3


def _click_tokens() -> list[str]:
    cells = [f"{r}{c}" for r in range(GRID) for c in range(GRID)]
    tokens = [f"click:{b.value}:{cell}" for b in (Button.LEFT, Button.RIGHT) for cell in cells]
    return [*tokens, "click:middle"]


TOKENS: Final[tuple[str, ...]] = (
    PAD,
    SUPPRESSED,
    *_click_tokens(),
    "scroll:up",
    "scroll:down",
    *(f"key:{k.value}" for k in KeyClass),
    *(f"shortcut:{s.value}" for s in Shortcut),
    *(f"switch:{c.value}" for c in AppCategory),
)
TOKEN_ID: Final[dict[str, int]] = {token: i for i, token in enumerate(TOKENS)}
VOCAB_SIZE: Final = len(TOKENS)
PAD_ID: Final = TOKEN_ID[PAD]

# App context: index 0 means "no app seen yet".
CATEGORIES: Final[tuple[AppCategory | None, ...]] = (None, *AppCategory)
CATEGORY_ID: Final[dict[AppCategory | None, int]] = {c: i for i, c in enumerate(CATEGORIES)}
NUM_CATEGORIES: Final = len(CATEGORIES)
NO_CATEGORY: Final = "none"
CATEGORY_NAMES: Final[tuple[str, ...]] = tuple(
    NO_CATEGORY if c is None else c.value for c in CATEGORIES
)


# Time since the previous action, in log-scale buckets: 0 means not known (padding,
# the first action, or a caller that gave no times); bucket b >= 1 holds gaps below
# GAP_EDGES_SECONDS[b - 1] (the last bucket everything longer). Typing and clicking
# fall in the first few, a pause to think in the middle, a break in the last ones.
GAP_EDGES_SECONDS: Final[tuple[float, ...]] = (
    0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
)  # fmt: skip
UNKNOWN_GAP: Final = 0
NUM_GAP_BUCKETS: Final = len(GAP_EDGES_SECONDS) + 2


def gap_bucket(seconds: float) -> int:
    """The bucket of a gap of ``seconds`` between two actions (never ``UNKNOWN_GAP``)."""
    return 1 + bisect_right(GAP_EDGES_SECONDS, max(0.0, seconds))


@dataclass(frozen=True, slots=True)
class Action:
    """One token with the app category in front when it happened, and when (seconds)."""

    token: int
    category: int
    t: float = 0.0


def _cell(x: float, y: float) -> str:
    col = min(GRID - 1, int(x * GRID))
    row = min(GRID - 1, int(y * GRID))
    return f"{row}{col}"


def token_of(event: Event) -> str | None:
    """Return the token of one event, or None for events that are not actions."""
    match event:
        case Click(button=Button.MIDDLE):
            return "click:middle"
        case Click(x=x, y=y, button=button):
            return f"click:{button.value}:{_cell(x, y)}"
        case Scroll(dy=dy):
            return "scroll:up" if dy > 0 else "scroll:down"
        case Key(key_class=key_class) | KeyRun(key_class=key_class):
            return f"key:{key_class.value}"
        case ShortcutPressed(name=name):
            return f"shortcut:{name.value}"
        case Focus(category=category):
            return f"switch:{category.value}"
        case Suppressed():
            return SUPPRESSED
    return None


_LETTER: Final = f"key:{KeyClass.LETTER.value}"
_SPACE: Final = f"key:{KeyClass.SPACE.value}"


def actions(events: Iterable[Event]) -> Iterator[Action]:
    """Turn an event stream into actions, collapsing runs of one key class.

    Old vaults hold one ``Key`` per keystroke, new ones one ``KeyRun`` per run; both
    collapse the same way, so the same typing gives the same tokens either way.
    """
    category = CATEGORY_ID[None]
    previous_key: str | None = None
    for event in events:
        token = token_of(event)
        if token is None:
            continue
        if isinstance(event, Key | KeyRun | Scroll):
            if token == _SPACE and previous_key == _LETTER:
                continue  # a space inside typed text
            if token == previous_key:
                continue  # one run of a key class, or one scroll gesture
            previous_key = token
        else:
            previous_key = None
        yield Action(TOKEN_ID[token], category, event.t)
        if isinstance(event, Focus):
            category = CATEGORY_ID[event.category]
