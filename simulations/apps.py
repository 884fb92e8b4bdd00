"""The apps synthetic employees use, with the category the recorder would map them to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from policy.events import AppCategory


@dataclass(frozen=True)
class App:
    """An app id (as from WM_CLASS) and its category; ``sensitive`` apps are suppressed."""

    app_id: str
    category: AppCategory
    sensitive: bool = False


APPS: Final[dict[str, App]] = {
    app.app_id: app
    for app in (
        App("code", AppCategory.EDITOR),
        App("terminal", AppCategory.TERMINAL),
        App("firefox", AppCategory.BROWSER),
        App("thunderbird", AppCategory.EMAIL),
        App("writer", AppCategory.DOCS),
        App("calc", AppCategory.SPREADSHEET),
        App("figma", AppCategory.DESIGN),
        App("jira", AppCategory.TICKETING),
        App("zoom", AppCategory.MEETINGS),
        App("files", AppCategory.FILES),
        App("slack", AppCategory.CHAT, sensitive=True),
        App("workday", AppCategory.HR, sensitive=True),
        App("keepassxc", AppCategory.PASSWORD_MANAGER, sensitive=True),
        App("bank", AppCategory.BANKING, sensitive=True),
    )
}
