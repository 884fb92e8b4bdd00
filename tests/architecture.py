"""The package map, checked: which package imports which, and what is forbidden.

Run ``python -m tests.architecture`` to print the import graph between client/'s
packages and hearth's top-level packages, and to exit non-zero on a forbidden arrow
or a client module over ``MAX_LINES`` lines. ``tests/test_architecture.py`` runs the
same check under pytest. It reads the source with ``ast`` only: no module is
imported, so it takes well under a second. Every import counts, including the ones
inside functions (hearth imports heavy modules lazily) and under ``TYPE_CHECKING``
(a type is a dependency too).

The arrows (docs/design.md, "Package map"): inside client/, imports flow one way,

    cli -> dashboard -> control, storage
    cli -> recording, learning, deployment, control, storage
    recording -> control, storage
    learning -> control, storage
    deployment -> learning, control, storage
    control -> storage
    storage -> nothing in client/

and every client package may import policy/ and privacy/, never server/, strategies/
or simulations/. server/ never imports client/; policy/ and privacy/ (the ground
both sides stand on) import neither, nor server/, strategies/ or simulations/.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
TOP_LEVEL: Final = ("client", "policy", "privacy", "server", "strategies", "simulations")
MAX_LINES: Final = 400

CLIENT_PACKAGES: Final = (
    "cli",
    "dashboard",
    "recording",
    "learning",
    "deployment",
    "control",
    "storage",
)
SHARED: Final = frozenset({"policy", "privacy"})
# Which client package may import which (besides itself and SHARED).
CLIENT_ALLOWED: Final[dict[str, frozenset[str]]] = {
    "cli": frozenset({"dashboard", "recording", "learning", "deployment", "control", "storage"}),
    "dashboard": frozenset({"control", "storage"}),
    "recording": frozenset({"control", "storage"}),
    "learning": frozenset({"control", "storage"}),
    "deployment": frozenset({"learning", "control", "storage"}),
    "control": frozenset({"storage"}),
    "storage": frozenset(),
}
# What each top-level package must never import.
FORBIDDEN: Final[dict[str, frozenset[str]]] = {
    "client": frozenset({"server", "strategies", "simulations"}),
    "server": frozenset({"client", "simulations"}),
    "policy": frozenset({"client", "server", "strategies", "simulations"}),
    "privacy": frozenset({"client", "server", "strategies", "simulations"}),
    "strategies": frozenset({"client", "simulations"}),
}


@dataclass(frozen=True)
class Arrow:
    """One import: the importing file and line, and the two graph nodes."""

    path: str
    line: int
    source: str
    target: str
    module: str


@dataclass
class Report:
    """The graph and everything wrong with it."""

    edges: Counter[tuple[str, str]] = field(default_factory=Counter)
    arrows: list[str] = field(default_factory=list)  # forbidden imports
    loose: list[str] = field(default_factory=list)  # client modules outside a package
    oversized: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """Everything that fails the check."""
        return [*self.arrows, *self.loose, *self.oversized]


def _module_of(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str, root: Path) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports (absolute dotted names), with its line."""
    module = _module_of(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield node.lineno, candidate if _is_module(candidate, root) else base


def node_of(dotted: str) -> str | None:
    """The graph node of a module: ``client/<package>`` inside client/, else its top level."""
    parts = dotted.split(".")
    if parts[0] not in TOP_LEVEL:
        return None
    if parts[0] != "client" or len(parts) == 1:
        return parts[0]
    if parts[1] in CLIENT_PACKAGES:
        return f"client/{parts[1]}"
    return f"client/{parts[1]}"  # a module loose in client/: reported by ``check``


def _sources(root: Path) -> Iterable[Path]:
    for top in TOP_LEVEL:
        yield from sorted((root / top).rglob("*.py"))


def _allowed(source: str, target: str) -> str | None:
    """None when ``source`` may import ``target``, else why not."""
    if source == target:
        return None
    top_source, top_target = source.split("/", maxsplit=1)[0], target.split("/", maxsplit=1)[0]
    if top_target in FORBIDDEN.get(top_source, frozenset()):
        return f"{top_source}/ never imports {top_target}/"
    if top_source == "client" and top_target == "client":
        if source == "client" or target == "client":
            return None  # the client/ package docstring itself
        inner_source, inner_target = source.split("/")[1], target.split("/")[1]
        allowed = CLIENT_ALLOWED.get(inner_source)
        if allowed is None or inner_target not in CLIENT_ALLOWED:
            return None  # a loose module: reported on its own
        if inner_target not in allowed:
            may = ", ".join(sorted(allowed)) or "nothing else in client/"
            return f"client/{inner_source}/ may import only {may}"
    return None


def check(root: Path = ROOT) -> Report:
    """The import graph of hearth's packages, forbidden arrows, loose and oversized modules."""
    report = Report()
    for path in _sources(root):
        rel = path.relative_to(root).as_posix()
        source = node_of(_module_of(path, root))
        if source is None:
            continue
        if rel.startswith("client/") and rel != "client/__init__.py":
            inner = source.split("/")[1] if "/" in source else ""
            if inner not in CLIENT_PACKAGES:
                report.loose.append(
                    f"{rel}: not in a client package ({', '.join(CLIENT_PACKAGES)})"
                )
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES:
                report.oversized.append(f"{rel}: {lines} lines (at most {MAX_LINES})")
        for line, module in sorted(set(imported_modules(path, root))):
            target = node_of(module)
            if target is None or target == source:
                continue
            report.edges[source, target] += 1
            why = _allowed(source, target)
            if why is not None:
                report.arrows.append(f"{rel}:{line}: imports {module}: {why}")
    return report


def render(report: Report) -> str:
    """The graph, one line per importing package, then the problems."""
    targets: dict[str, list[str]] = {}
    for (source, target), count in sorted(report.edges.items()):
        targets.setdefault(source, []).append(f"{target} ({count})")
    lines = ["hearth package graph (importer -> imported, number of imports):"]
    lines += [f"  {source:<18} -> {', '.join(found)}" for source, found in targets.items()]
    lines += [f"note: {note}" for note in report.notes]
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines += [f"  {problem}" for problem in report.problems]
    else:
        lines.append("no forbidden arrow, no client module over the size limit")
    return "\n".join(lines)


def main() -> int:
    """Print the graph; non-zero when anything is forbidden."""
    report = check()
    print(render(report))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
