"""Multi-step workflows with long-range structure, written through an emitter.

The structure is what makes the task worth learning: a paste follows a copy made
several actions and an app switch earlier; a failed build sends the engineer back
to the editor to navigate and fix, a passing one to the browser. A model that
sees only the previous action cannot tell these apart.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from policy.events import (
    Button,
    Click,
    Event,
    Focus,
    Key,
    KeyClass,
    Paused,
    PointerMove,
    Resumed,
    Scroll,
    Shortcut,
    ShortcutPressed,
    Suppressed,
)
from simulations.apps import APPS, App
from simulations.personas import Habits


@dataclass
class Emitter:
    """Appends events with increasing ``seq`` and non-decreasing ``t``."""

    habits: Habits
    rng: random.Random
    events: list[Event] = field(default_factory=list)
    t: float = 0.0
    app: App | None = None

    def _tick(self, seconds: float) -> float:
        self.t += max(0.0, seconds)
        return self.t

    # -- primitives -------------------------------------------------------
    def focus(self, app_id: str) -> None:
        """Bring an app to the front; a sensitive one leaves only a suppressed gap."""
        app = APPS[app_id]
        if self.app is not None and self.app.app_id == app_id:
            return
        self.events.append(Focus(len(self.events), self._tick(0.4), app.app_id, app.category))
        self.app = app
        if app.sensitive:
            duration = self.rng.uniform(20.0, 300.0)
            self.events.append(Suppressed(len(self.events), self._tick(0.0), duration))
            self._tick(duration)

    def click(self, cell: tuple[float, float], button: Button | None = None) -> None:
        """Move there (a dwell point), then click near the habitual cell."""
        x = min(0.999, max(0.0, cell[0] + self.rng.gauss(0, 0.04)))
        y = min(0.999, max(0.0, cell[1] + self.rng.gauss(0, 0.04)))
        self.events.append(PointerMove(len(self.events), self._tick(0.3), x, y))
        chosen = button or self.habits.button_bias
        self.events.append(Click(len(self.events), self._tick(0.15), x, y, chosen))

    def scroll(self, down: bool, steps: int) -> None:
        """Scroll a few notches."""
        for _ in range(max(1, steps)):
            dy = -1 if down else 1
            self.events.append(Scroll(len(self.events), self._tick(0.25), 0.5, 0.5, dy))

    def key(self, key_class: KeyClass, count: int = 1) -> None:
        """Press keys of one class."""
        for _ in range(count):
            spk = self.habits.seconds_per_key * self.rng.uniform(0.6, 1.6)
            self.events.append(Key(len(self.events), self._tick(spk), key_class))

    def type_words(self, words: int) -> None:
        """Letters and spaces, with the odd typo fixed."""
        for i in range(max(1, words)):
            self.key(KeyClass.LETTER, self.rng.randint(2, 9))
            if self.rng.random() < 0.08:
                self.key(KeyClass.EDIT, self.rng.randint(1, 3))
                self.key(KeyClass.LETTER, self.rng.randint(1, 4))
            if i < words - 1:
                self.key(KeyClass.SPACE)

    def shortcut(self, name: Shortcut, menu: bool = True) -> None:
        """A shortcut, or the same command through a menu click, by habit."""
        if menu and self.rng.random() > self.habits.uses_shortcuts:
            self.click(self.habits.menu_cell, Button.LEFT)
            self.click((self.habits.menu_cell[0], self.habits.menu_cell[1] + 0.15), Button.LEFT)
            return
        self.events.append(ShortcutPressed(len(self.events), self._tick(0.3), name))

    def think(self, low: float = 1.0, high: float = 8.0) -> None:
        """Time passes without input."""
        self._tick(self.rng.uniform(low, high))

    def maybe_idle(self) -> bool:
        """Coffee, a colleague, a pause button; True if the person took a break."""
        if self.rng.random() >= self.habits.idle_rate:
            return False
        if self.rng.random() < 0.3:
            self.take_break(300, 1800)
        else:
            self._tick(self.rng.uniform(60, 600))
        return True

    def take_break(self, low: float, high: float) -> None:
        """Pause recording for a while (lunch, a long coffee), then resume."""
        self.events.append(Paused(len(self.events), self._tick(1.0)))
        self._tick(self.rng.uniform(low, high))
        self.events.append(Resumed(len(self.events), self._tick(0.0)))


def edit_build(em: Emitter) -> None:
    """Edit, save, build in the terminal, read the output; fix or move on."""
    em.focus("code")
    for _ in range(em.rng.randint(1, 3)):
        em.key(KeyClass.NAVIGATION, em.rng.randint(1, 6))
        em.type_words(em.habits.words_per_burst)
        em.key(KeyClass.ENTER)
    em.shortcut(Shortcut.SAVE)
    em.focus("terminal")
    em.key(KeyClass.NAVIGATION)  # history up
    em.key(KeyClass.ENTER)
    em.think(3, 20)
    em.scroll(down=False, steps=em.habits.scroll_length)
    if em.rng.random() < em.habits.build_failure_rate:
        em.shortcut(Shortcut.COPY, menu=False)
        em.focus("code")
        em.shortcut(Shortcut.FIND, menu=False)
        em.shortcut(Shortcut.PASTE, menu=False)
        em.key(KeyClass.ENTER)
        em.key(KeyClass.EDIT, em.rng.randint(2, 8))
        em.type_words(2)
        em.shortcut(Shortcut.SAVE)
    elif em.rng.random() < em.habits.checks_output:
        em.focus("firefox")
        em.shortcut(Shortcut.REFRESH, menu=False)
        em.scroll(down=True, steps=em.habits.scroll_length + 1)


def copy_paste(em: Emitter) -> None:
    """Copy in one app, switch, paste in another."""
    source = em.rng.choice(sorted(em.habits.paste_target))
    target = em.habits.paste_target[source]
    em.focus(source)
    em.scroll(down=True, steps=em.rng.randint(1, 3))
    em.click(em.habits.content_cell)
    if em.rng.random() < 0.5:
        em.shortcut(Shortcut.SELECT_ALL, menu=False)
    em.shortcut(Shortcut.COPY)
    em.think(0.5, 3)
    em.focus(target)
    em.click(em.habits.content_cell)
    em.shortcut(Shortcut.PASTE)
    if em.rng.random() < 0.6:
        em.shortcut(Shortcut.SAVE)


def support_ticket(em: Emitter) -> None:
    """Read a ticket, search the knowledge base, paste the answer, submit."""
    em.focus("jira")
    em.click((0.15, 0.4))
    em.scroll(down=True, steps=em.habits.scroll_length)
    em.focus("firefox")
    em.shortcut(Shortcut.NEW_TAB, menu=False)
    em.type_words(3)
    em.key(KeyClass.ENTER)
    em.click(em.habits.content_cell)
    em.scroll(down=True, steps=2)
    em.shortcut(Shortcut.COPY)
    em.shortcut(Shortcut.CLOSE_TAB, menu=False)
    em.focus("jira")
    em.click((0.5, 0.75))
    em.shortcut(Shortcut.PASTE)
    em.type_words(em.habits.words_per_burst)
    em.click(em.habits.submit_cell, Button.LEFT)


def review_ticket(em: Emitter) -> None:
    """Skim a ticket and comment."""
    em.focus("jira")
    em.scroll(down=True, steps=3)
    em.click((0.5, 0.75))
    em.type_words(em.habits.words_per_burst)
    em.click(em.habits.submit_cell, Button.LEFT)


def spreadsheet(em: Emitter) -> None:
    """Fill cells, then chart and copy it into the report."""
    em.focus("calc")
    for _ in range(em.rng.randint(2, 6)):
        if em.rng.random() < 0.6:
            em.key(KeyClass.NAVIGATION, em.rng.randint(1, 3))
        if em.rng.random() < 0.25:
            em.key(KeyClass.PUNCTUATION)  # a formula
            em.key(KeyClass.LETTER, 3)
        em.key(KeyClass.DIGIT, em.rng.randint(1, 6))
        em.key(em.rng.choice([KeyClass.ENTER, KeyClass.ENTER, KeyClass.NAVIGATION]))
    em.shortcut(Shortcut.SAVE)
    if em.rng.random() < 0.4:
        em.click((0.8, 0.6))
        em.shortcut(Shortcut.COPY)
        em.focus("writer")
        em.shortcut(Shortcut.PASTE)
        em.shortcut(Shortcut.SAVE)


def report(em: Emitter) -> None:
    """Write a document."""
    em.focus("writer")
    for _ in range(em.rng.randint(1, 3)):
        em.type_words(em.habits.words_per_burst + 3)
        em.key(KeyClass.PUNCTUATION)
        em.key(KeyClass.ENTER)
    em.shortcut(Shortcut.SAVE)


def design(em: Emitter) -> None:
    """Place, adjust, undo, export."""
    em.focus("figma")
    for _ in range(em.rng.randint(3, 8)):
        em.click((em.rng.choice([0.2, 0.5, 0.8]), em.rng.choice([0.3, 0.6])))
        if em.rng.random() < 0.3:
            em.shortcut(Shortcut.UNDO, menu=False)
            if em.rng.random() < 0.5:
                em.shortcut(Shortcut.UNDO, menu=False)
    em.click((0.95, 0.5), Button.RIGHT)
    em.shortcut(Shortcut.SAVE)
    if em.rng.random() < 0.3:
        em.focus("files")
        em.click(em.habits.content_cell)


def files(em: Emitter) -> None:
    """Find an asset."""
    em.focus("files")
    em.key(KeyClass.NAVIGATION, 3)
    em.key(KeyClass.ENTER)


def email(em: Emitter) -> None:
    """Read and answer mail."""
    em.focus("thunderbird")
    em.click((0.2, 0.3))
    em.scroll(down=True, steps=em.habits.scroll_length)
    if em.rng.random() < 0.6:
        em.click((0.1, 0.1))  # reply
        em.type_words(em.habits.words_per_burst)
        em.key(KeyClass.ENTER)
        em.type_words(2)
        em.click(em.habits.submit_cell, Button.LEFT)


def meeting(em: Emitter) -> None:
    """Join a call and sit through it."""
    em.focus("zoom")
    em.click((0.5, 0.9))
    em.think(120, 900)
    if em.rng.random() < 0.5:
        em.focus("writer")  # notes during the call
        em.type_words(em.habits.words_per_burst)
        em.focus("zoom")
    em.click((0.9, 0.95))


def chat(em: Emitter) -> None:
    """Check chat: sensitive, so the recorder keeps only a gap."""
    back = em.app.app_id if em.app is not None else "firefox"
    em.focus("slack")  # alt-tab back happens inside chat, so it is suppressed too
    em.focus(back if not APPS[back].sensitive else "firefox")


def vault(em: Emitter) -> None:
    """Look up a password: sensitive, suppressed."""
    em.focus("keepassxc")
    em.focus("terminal" if em.habits.persona.name == "engineer" else "firefox")
    em.shortcut(Shortcut.PASTE, menu=False)
    em.key(KeyClass.ENTER)


def hr(em: Emitter) -> None:
    """Approve leave in the HR system: sensitive, suppressed."""
    em.focus("workday")
    em.focus("thunderbird")


WORKFLOWS: Final[dict[str, Callable[[Emitter], None]]] = {
    "edit_build": edit_build,
    "copy_paste": copy_paste,
    "support_ticket": support_ticket,
    "review_ticket": review_ticket,
    "spreadsheet": spreadsheet,
    "report": report,
    "design": design,
    "files": files,
    "email": email,
    "meeting": meeting,
    "chat": chat,
    "vault": vault,
    "hr": hr,
}


def banking(em: Emitter) -> None:
    """Pay a bill over lunch: sensitive, suppressed."""
    back = em.app.app_id if em.app is not None and not em.app.sensitive else "firefox"
    em.focus("bank")
    em.focus(back)


WORKFLOWS["banking"] = banking
