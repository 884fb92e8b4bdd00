"""The event schema: the one record the recorder writes and the featurizer reads.

Every event carries a per-device sequence number and a monotonic timestamp in
seconds. Nothing here can hold a raw window title or an unredacted keystroke:
focus carries an app id and category, keys carry a class, and text is only ever
written after the redactor has run.

The wire form (``to_record`` / ``from_record``) is a compact dict with short keys,
versioned by ``SCHEMA_VERSION``; ``from_record`` is the single place where stored
bytes become typed events again, so it validates everything it reads.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeAlias

SCHEMA_VERSION: Final = 1


class SchemaError(ValueError):
    """A stored record does not match the event schema."""


class Modality(StrEnum):
    """What an employee can consent to, one by one."""

    POINTER = "pointer"
    KEYS = "keys"
    APPS = "apps"
    TEXT = "text"
    SCREENS = "screens"


class KeyClass(StrEnum):
    """What a keystroke becomes when the text modality is not granted."""

    LETTER = "letter"
    DIGIT = "digit"
    SPACE = "space"
    ENTER = "enter"
    EDIT = "edit"  # backspace, delete
    NAVIGATION = "navigation"  # arrows, home/end, page up/down, tab
    MODIFIER = "modifier"
    PUNCTUATION = "punctuation"
    OTHER = "other"


class Shortcut(StrEnum):
    """Named keyboard shortcuts, recognized from modifier + key."""

    COPY = "copy"
    PASTE = "paste"
    CUT = "cut"
    SAVE = "save"
    UNDO = "undo"
    REDO = "redo"
    FIND = "find"
    SELECT_ALL = "select_all"
    SWITCH_APP = "switch_app"
    NEW_TAB = "new_tab"
    CLOSE_TAB = "close_tab"
    NEW = "new"
    OPEN = "open"
    PRINT = "print"
    REFRESH = "refresh"
    RUN = "run"


class AppCategory(StrEnum):
    """The kind of app in front; the only app information the model sees."""

    EDITOR = "editor"
    TERMINAL = "terminal"
    BROWSER = "browser"
    EMAIL = "email"
    CHAT = "chat"
    DOCS = "docs"
    SPREADSHEET = "spreadsheet"
    DESIGN = "design"
    TICKETING = "ticketing"
    MEETINGS = "meetings"
    FILES = "files"
    HR = "hr"
    PASSWORD_MANAGER = "password_manager"  # noqa: S105
    BANKING = "banking"
    OTHER = "other"


class Button(StrEnum):
    """Pointer buttons."""

    LEFT = "left"
    RIGHT = "right"
    MIDDLE = "middle"


class Kind(StrEnum):
    """The discriminator stored with every record."""

    POINTER_MOVE = "move"
    CLICK = "click"
    SCROLL = "scroll"
    KEY = "key"  # one keystroke: written by vaults before key runs, still read
    KEY_RUN = "keys"
    SHORTCUT = "shortcut"
    TEXT = "text"
    FOCUS = "focus"
    THUMBNAIL = "thumb"
    SUPPRESSED = "suppressed"
    PAUSE = "pause"
    RESUME = "resume"
    ACTIVITY = "activity"


# Which consent each kind of event needs. Markers (suppressed, pause, resume)
# record only that capture did not happen, so they need none.
MODALITY_OF: Final[Mapping[Kind, Modality | None]] = {
    Kind.POINTER_MOVE: Modality.POINTER,
    Kind.CLICK: Modality.POINTER,
    Kind.SCROLL: Modality.POINTER,
    Kind.KEY: Modality.KEYS,
    Kind.KEY_RUN: Modality.KEYS,
    Kind.SHORTCUT: Modality.KEYS,
    Kind.TEXT: Modality.TEXT,
    Kind.FOCUS: Modality.APPS,
    Kind.THUMBNAIL: Modality.SCREENS,
    Kind.SUPPRESSED: None,
    Kind.PAUSE: None,
    Kind.RESUME: None,
    # What step of work was done: the process-mining twin of the app in front, so
    # it needs the apps consent and goes when that consent is withdrawn.
    Kind.ACTIVITY: Modality.APPS,
}

MAX_THUMBNAIL_WIDTH: Final = 64
MAX_THUMBNAIL_HEIGHT: Final = 40
MAX_TEXT_LENGTH: Final = 4096
MAX_ACTIVITY_LENGTH: Final = 200


def _unit(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise SchemaError(f"{name} must be a normalized coordinate in [0, 1], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class PointerMove:
    """A coalesced pointer position (at most a few per second, never the raw stream)."""

    seq: int
    t: float
    x: float
    y: float
    kind: Kind = Kind.POINTER_MOVE


@dataclass(frozen=True, slots=True)
class Click:
    """A button press at a normalized screen position."""

    seq: int
    t: float
    x: float
    y: float
    button: Button
    kind: Kind = Kind.CLICK


@dataclass(frozen=True, slots=True)
class Scroll:
    """A scroll step; ``dy`` > 0 scrolls up, < 0 scrolls down."""

    seq: int
    t: float
    x: float
    y: float
    dy: int
    kind: Kind = Kind.SCROLL


@dataclass(frozen=True, slots=True)
class Key:
    """A keystroke reduced to its class, as vaults written before key runs hold it.

    The recorder no longer writes these (a per-key timestamp is typing rhythm, a
    biometric); they are decoded so old vaults keep training and exporting.
    """

    seq: int
    t: float
    key_class: KeyClass
    kind: Kind = Kind.KEY


@dataclass(frozen=True, slots=True)
class KeyRun:
    """A run of keys of one class: how many, when it began and how long it took.

    ``t`` and ``duration`` are whole seconds (``key_run`` rounds them), so the
    rhythm of typing, a biometric, is never stored. Letters and the spaces between
    words form one letter run, so word lengths are not kept either.
    """

    seq: int
    t: float
    key_class: KeyClass
    count: int
    duration: float
    kind: Kind = Kind.KEY_RUN


def key_run(seq: int, start: float, end: float, key_class: KeyClass, count: int) -> KeyRun:
    """A ``KeyRun`` from the first and last key's times, each rounded to the second."""
    begin = float(round(start))
    return KeyRun(seq, begin, key_class, count, float(max(0, round(end) - round(start))))


@dataclass(frozen=True, slots=True)
class ShortcutPressed:
    """A recognized keyboard shortcut."""

    seq: int
    t: float
    name: Shortcut
    kind: Kind = Kind.SHORTCUT


@dataclass(frozen=True, slots=True)
class Text:
    """Typed text, only with the text modality, and always already redacted."""

    seq: int
    t: float
    text: str
    kind: Kind = Kind.TEXT


@dataclass(frozen=True, slots=True)
class Focus:
    """The app in front changed. Never a window title: an app id and a category."""

    seq: int
    t: float
    app_id: str
    category: AppCategory
    kind: Kind = Kind.FOCUS


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """A tiny grayscale screen thumbnail (row-major, one byte per pixel)."""

    seq: int
    t: float
    width: int
    height: int
    pixels: bytes
    kind: Kind = Kind.THUMBNAIL


@dataclass(frozen=True, slots=True)
class Suppressed:
    """Capture was withheld (sensitive app in front); only its duration is kept."""

    seq: int
    t: float
    duration: float
    reason: str = "sensitive_app"
    kind: Kind = Kind.SUPPRESSED


@dataclass(frozen=True, slots=True)
class Paused:
    """The employee paused recording."""

    seq: int
    t: float
    kind: Kind = Kind.PAUSE


@dataclass(frozen=True, slots=True)
class Resumed:
    """The employee resumed recording."""

    seq: int
    t: float
    kind: Kind = Kind.RESUME


@dataclass(frozen=True, slots=True)
class Activity:
    """One activity of a process-mining case, imported from an event log.

    A log's events are a device's data like any recording (``hearth-sim
    import-log`` writes them into encrypted vaults): ``case`` numbers the case on
    this device, ``name`` is the activity as the log names it, a token of the log's
    vocabulary. The recorder never writes these; the desktop featurizer skips them.
    """

    seq: int
    t: float
    case: int
    name: str
    kind: Kind = Kind.ACTIVITY


Event: TypeAlias = (
    PointerMove
    | Click
    | Scroll
    | Key
    | KeyRun
    | ShortcutPressed
    | Text
    | Focus
    | Thumbnail
    | Suppressed
    | Paused
    | Resumed
    | Activity
)


def to_record(event: Event) -> dict[str, Any]:
    """Encode an event as a compact JSON-ready dict (``k`` is the kind)."""
    base: dict[str, Any] = {"k": event.kind.value, "s": event.seq, "t": event.t}
    match event:
        case PointerMove(x=x, y=y):
            base.update(x=x, y=y)
        case Click(x=x, y=y, button=button):
            base.update(x=x, y=y, b=button.value)
        case Scroll(x=x, y=y, dy=dy):
            base.update(x=x, y=y, dy=dy)
        case Key(key_class=key_class):
            base["c"] = key_class.value
        case KeyRun(key_class=key_class, count=count, duration=duration):
            base.update(t=round(event.t), c=key_class.value, n=count, d=round(duration))
        case ShortcutPressed(name=name):
            base["n"] = name.value
        case Text(text=text):
            base["x"] = text
        case Focus(app_id=app_id, category=category):
            base.update(a=app_id, c=category.value)
        case Thumbnail(width=width, height=height, pixels=pixels):
            base.update(w=width, h=height, p=base64.b64encode(pixels).decode("ascii"))
        case Suppressed(duration=duration, reason=reason):
            base.update(d=duration, r=reason)
        case Activity(case=case, name=name):
            base.update(c=case, a=name)
        case Paused() | Resumed():
            pass
    return base


def _get(record: Mapping[str, Any], key: str, kind: type) -> Any:
    try:
        value = record[key]
    except KeyError:
        raise SchemaError(f"event record is missing field {key!r}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SchemaError(f"event field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _enum(enum: type[StrEnum], value: str, field: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise SchemaError(f"event field {field!r} has unknown value {value!r}") from None


def _thumbnail(record: Mapping[str, Any], seq: int, t: float) -> Thumbnail:
    width = _get(record, "w", int)
    height = _get(record, "h", int)
    if not (0 < width <= MAX_THUMBNAIL_WIDTH and 0 < height <= MAX_THUMBNAIL_HEIGHT):
        raise SchemaError(
            f"thumbnail must be at most {MAX_THUMBNAIL_WIDTH}x{MAX_THUMBNAIL_HEIGHT}, "
            f"got {width}x{height}"
        )
    try:
        pixels = base64.b64decode(_get(record, "p", str), validate=True)
    except ValueError:
        raise SchemaError("thumbnail pixels are not valid base64") from None
    if len(pixels) != width * height:
        raise SchemaError("thumbnail pixel count does not match its size")
    return Thumbnail(seq, t, width, height, pixels)


def _xy(record: Mapping[str, Any]) -> tuple[float, float]:
    return _unit("x", _get(record, "x", float)), _unit("y", _get(record, "y", float))


def _decode_text(record: Mapping[str, Any], seq: int, t: float) -> Text:
    text = _get(record, "x", str)
    if len(text) > MAX_TEXT_LENGTH:
        raise SchemaError(f"text event longer than {MAX_TEXT_LENGTH} characters")
    return Text(seq, t, text)


def _decode_run(record: Mapping[str, Any], seq: int, t: float) -> KeyRun:
    count = _get(record, "n", int)
    duration = _get(record, "d", float)
    if count < 1:
        raise SchemaError(f"a key run counts at least one key, got {count}")
    if duration < 0 or duration != round(duration) or t != round(t):
        raise SchemaError("a key run's start and duration must be whole seconds")
    return KeyRun(seq, t, _enum(KeyClass, _get(record, "c", str), "c"), count, duration)


def _decode_activity(record: Mapping[str, Any], seq: int, t: float) -> Activity:
    case = _get(record, "c", int)
    name = _get(record, "a", str)
    if case < 0:
        raise SchemaError(f"an activity's case number must be >= 0, got {case}")
    if not name or len(name) > MAX_ACTIVITY_LENGTH:
        raise SchemaError(f"an activity name is 1 to {MAX_ACTIVITY_LENGTH} characters")
    return Activity(seq, t, case, name)


_Decoder: TypeAlias = Callable[[Mapping[str, Any], int, float], Event]

_DECODERS: Final[Mapping[Kind, _Decoder]] = {
    Kind.POINTER_MOVE: lambda r, s, t: PointerMove(s, t, *_xy(r)),
    Kind.CLICK: lambda r, s, t: Click(s, t, *_xy(r), _enum(Button, _get(r, "b", str), "b")),
    Kind.SCROLL: lambda r, s, t: Scroll(s, t, *_xy(r), _get(r, "dy", int)),
    Kind.KEY: lambda r, s, t: Key(s, t, _enum(KeyClass, _get(r, "c", str), "c")),
    Kind.KEY_RUN: _decode_run,
    Kind.SHORTCUT: lambda r, s, t: ShortcutPressed(s, t, _enum(Shortcut, _get(r, "n", str), "n")),
    Kind.TEXT: _decode_text,
    Kind.FOCUS: lambda r, s, t: Focus(
        s, t, _get(r, "a", str), _enum(AppCategory, _get(r, "c", str), "c")
    ),
    Kind.THUMBNAIL: _thumbnail,
    Kind.SUPPRESSED: lambda r, s, t: Suppressed(s, t, _get(r, "d", float), _get(r, "r", str)),
    Kind.PAUSE: lambda r, s, t: Paused(s, t),
    Kind.RESUME: lambda r, s, t: Resumed(s, t),
    Kind.ACTIVITY: _decode_activity,
}


def from_record(record: Mapping[str, Any]) -> Event:
    """Decode and validate one stored record; raises ``SchemaError`` on any mismatch."""
    if not isinstance(record, Mapping):
        raise SchemaError("event record must be an object")
    kind = _enum(Kind, _get(record, "k", str), "k")
    seq = _get(record, "s", int)
    t = _get(record, "t", float)
    if seq < 0:
        raise SchemaError(f"sequence number must be >= 0, got {seq}")
    return _DECODERS[kind](record, seq, t)
