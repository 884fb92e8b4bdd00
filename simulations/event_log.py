"""Process-mining event logs as next-activity data: reading CSV and XES, the standard protocol.

A log is a set of cases (a ticket, an order, a patient), each an ordered trace of
activities with timestamps. Its vocabulary is built from the log's own activities
(plus the padding token and an end-of-case token), carried in the model's
configuration, so the same policy code trains a log's next-activity model.

The protocol is the one next-activity papers use: cases ordered by their first
event; the first two thirds train, the last third tests; after every prefix of
length two or more of a test case, predict the next activity, or the end of the
case after the last one.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np

from client.learning.featurize import Examples
from policy.model import ModelConfig
from policy.vocabulary import NO_CATEGORY, PAD

END: Final = "<end>"
MIN_TEST_PREFIX: Final = 2
TRAIN_FRACTION: Final = 2 / 3


class EventLogError(ValueError):
    """A log that cannot be read; the message says which column, line or element."""


@dataclass(frozen=True)
class Case:
    """One trace: its id and its activities in time order (with their times, when read)."""

    case_id: str
    activities: tuple[str, ...]
    start: float
    times: tuple[float, ...] = ()

    def time_of(self, step: int) -> float:
        """When the ``step``-th activity happened (a second apart from the start if unknown)."""
        return self.times[step] if self.times else self.start + step


def _timestamp(text: str, where: str) -> float:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        try:
            return float(text)
        except ValueError:
            message = f"{where}: timestamp {text!r} is neither ISO 8601 nor a number"
            raise EventLogError(message) from None


def _cases(events: dict[str, list[tuple[float, int, str]]]) -> list[Case]:
    cases = []
    for case_id, rows in events.items():
        rows.sort()
        activities = tuple(a for _, _, a in rows)
        cases.append(Case(case_id, activities, rows[0][0], tuple(t for t, _, _ in rows)))
    cases.sort(key=lambda c: (c.start, c.case_id))
    return cases


def read_csv(path: Path, case: str, activity: str, timestamp: str) -> list[Case]:
    """Cases from a CSV with a header row; the three flags name its columns."""
    events: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (case, activity, timestamp) if c not in (reader.fieldnames or [])]
        if missing:
            have = ", ".join(reader.fieldnames or [])
            raise EventLogError(f"{path}: no column {missing[0]!r} (columns: {have})")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            if not row[case] or not row[activity]:
                raise EventLogError(f"{where}: empty case or activity")
            events[row[case]].append((_timestamp(row[timestamp], where), line, row[activity]))
    if not events:
        raise EventLogError(f"{path}: no events")
    return _cases(events)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_xes(path: Path) -> list[Case]:
    """Cases from an XES log: ``concept:name`` of traces and events, ``time:timestamp``."""
    events: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    try:
        root = ET.parse(path).getroot()  # noqa: S314 - a local file the user names
    except ET.ParseError as exc:
        raise EventLogError(f"{path}: not XML ({exc})") from None
    order = 0
    for number, trace in enumerate(e for e in root if _local(e.tag) == "trace"):
        name = f"trace-{number}"
        for attribute in trace:
            if _local(attribute.tag) == "string" and attribute.get("key") == "concept:name":
                name = attribute.get("value", name)
        for event in (e for e in trace if _local(e.tag) == "event"):
            values = {a.get("key"): a.get("value", "") for a in event}
            if "concept:name" not in values:
                raise EventLogError(f"{path}: an event of trace {name!r} has no concept:name")
            order += 1
            when = values.get("time:timestamp")
            stamp = _timestamp(when, f"{path}: trace {name!r}") if when else float(order)
            events[name].append((stamp, order, values["concept:name"]))
    if not events:
        raise EventLogError(f"{path}: no traces with events")
    return _cases(events)


def read_log(
    path: Path, case: str = "case", activity: str = "activity", timestamp: str = "timestamp"
) -> list[Case]:
    """A CSV or XES log (by its suffix), cases ordered by their first event."""
    if not path.is_file():
        raise EventLogError(f"{path}: no such file")
    if path.suffix.lower() == ".xes":
        return read_xes(path)
    return read_csv(path, case, activity, timestamp)


def log_model_config(cases: Sequence[Case], context_length: int) -> ModelConfig:
    """The model's configuration for this log: its activities are the vocabulary.

    No gap embedding: the next-activity protocol's examples are built from activity
    prefixes without their times, so every gap would read as unknown. Hidden width 64,
    as the event-log figures were measured: these campaigns run no user-level noise (the
    company campaign's 32 is for that noise).
    """
    activities = sorted({a for c in cases for a in c.activities})
    return ModelConfig(
        context_length=context_length,
        hidden=64,
        gap_dim=0,
        tokens=(PAD, END, *activities),
        categories=(NO_CATEGORY,),
    )


def case_examples(cases: Sequence[Case], config: ModelConfig, min_prefix: int = 1) -> Examples:
    """After every prefix of at least ``min_prefix`` activities: the next one, or the end."""
    index = {t: i for i, t in enumerate(config.tokens)}
    k = config.context_length
    contexts: list[list[int]] = []
    targets: list[int] = []
    for case in cases:
        ids = [index[a] for a in case.activities] + [index[END]]
        padded = [index[PAD]] * k + ids
        for length in range(min_prefix, len(ids)):
            contexts.append(padded[length : length + k])
            targets.append(ids[length])
    context = np.array(contexts, dtype=np.int64).reshape(-1, k)
    target = np.array(targets, dtype=np.int64)
    return Examples(context, np.zeros(len(target), dtype=np.int64), target)


def split_cases(cases: Sequence[Case]) -> tuple[list[Case], list[Case]]:
    """The first two thirds (by start) train, the last third tests."""
    cut = round(len(cases) * TRAIN_FRACTION)
    return list(cases[:cut]), list(cases[cut:])


def device_partition(cases: Sequence[Case], devices: int) -> list[list[Case]]:
    """Cases dealt to ``devices`` simulated devices in contiguous blocks of time."""
    if devices < 1:
        raise ValueError("at least one device")
    blocks = np.array_split(np.arange(len(cases)), devices)
    return [[cases[i] for i in block] for block in blocks]


def generated_log(cases: int, seed: int) -> list[Case]:
    """A synthetic process with long-range structure, for tests and benchmarks.

    A case is registered, triaged as kind A or B, worked on for one to four steps,
    checked, then closed the way its kind is closed: what follows ``check`` depends
    on the triage several activities back, which the last two activities do not show.
    """
    rng = np.random.default_rng(seed)
    out = []
    for number in range(cases):
        kind = "a" if rng.random() < 0.5 else "b"
        work = [str(rng.choice(["review", "edit", "comment"])) for _ in range(rng.integers(1, 5))]
        close = ["approve", "notify"] if kind == "a" else ["reject", "archive"]
        activities = ("register", f"triage-{kind}", *work, "check", *close)
        out.append(Case(f"case-{number:05d}", activities, float(number * 60)))
    return out


def write_csv(cases: Sequence[Case], path: Path) -> Path:
    """One row per event: case, activity, ISO timestamp (a minute apart within a case)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "activity", "timestamp"])
        for case in cases:
            for step, activity in enumerate(case.activities):
                when = datetime.fromtimestamp(case.start + step, tz=UTC).isoformat()
                writer.writerow([case.case_id, activity, when])
    return path


def write_xes(cases: Sequence[Case], path: Path) -> Path:
    """The same log as XES 1849-2016 (concept:name, time:timestamp)."""
    root = ET.Element("log", {"xes.version": "1849-2016", "xmlns": "http://www.xes-standard.org/"})
    for case in cases:
        trace = ET.SubElement(root, "trace")
        ET.SubElement(trace, "string", {"key": "concept:name", "value": case.case_id})
        for step, activity in enumerate(case.activities):
            event = ET.SubElement(trace, "event")
            ET.SubElement(event, "string", {"key": "concept:name", "value": activity})
            when = datetime.fromtimestamp(case.start + step, tz=UTC).isoformat()
            ET.SubElement(event, "date", {"key": "time:timestamp", "value": when})
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
