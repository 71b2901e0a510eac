"""Render docs/configuration.md from the settings' own definitions (``shared.settings``).

    python -m hack.configuration_doc      # (re)writes docs/configuration.md; `make docs` runs it

The whole file is generated: the prose below is its template, the table comes from each field's metadata
(``shared.settings._doc``). ``tests/unit/test_configuration_doc.py`` fails when the committed file differs.
Development tooling: the product never imports it.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from shared.settings import PREFIX, RunsTable, Settings

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
COMMAND = "make docs"

_HEAD = f"""\
# Configuration

<!-- Generated from shared/settings.py by `python -m hack.configuration_doc` ({COMMAND}); do not edit. -->

Every program of the `leoflow-staging` console script reads its settings once, at start, from
`{PREFIX}*` environment variables. A command-line flag, where one exists, overrides its variable. Global
flags go before the subcommand (`leoflow-staging --database-url URL volumes`); the `serve` flags go after
`serve`. In the "used by" column, *serve* is the webhook and *gc* is the GC sweep (with or without
`--dry-run`).

With the Helm chart, set the chart value instead: the chart passes it to the programs that read it
([operators.md](operators.md#values) lists every chart value). A setting with no chart value keeps its
default there, or is set by the chart itself.
"""

_TAIL = f"""\
## Value formats

- Durations are a number with an optional unit: `90s`, `30m`, `24h`, `1d`. A bare number means seconds.
- Sizes are Kubernetes quantities, such as `50Gi`.
- Whole numbers (counts, the port, bytes) must be at least 1. Seconds must be at least 0 and may have a
  fraction.
- Booleans are true for `1`, `true` or `yes` (any case); any other value is false.
- Lists are comma-separated.
- Table and column names must be SQL identifiers (the table optionally `schema.table`).
- An empty value for a setting whose default is unset means unset.

## Errors and warnings

A malformed value stops the program with exit code 2 and the message
`leoflow-staging <command>: configuration error: ...`, naming the variable.

A variable with the `{PREFIX}` prefix that is not a setting (a typo, or a setting that was removed) is
ignored. The program still runs, and prints one line per such variable on stderr:
`leoflow-staging: warning: <NAME> is not a setting (ignored); see the README`.

The build, test and benchmark tooling has its own prefix, `LEOFLOW_DEV_` (e.g. `LEOFLOW_DEV_CACHE`, see
[development.md](development.md)), so the product never needs to know its names.

## The metadatabase

The metadatabase is PostgreSQL only, and has no default URL: a command that needs it stops with a
configuration error naming `{PREFIX}DATABASE_URL` when it is unset. For a local trial, `make demo` or
`make dev-up` starts a throwaway PostgreSQL; production uses the Helm chart's `database.existingSecret`
(see [operators.md](operators.md#install)).
"""

_COLUMNS = ("variable", "default", "chart value", "flag", "used by", "meaning")


def variables() -> Iterator[tuple[str, Field[Any], Any]]:
    """Every setting as (variable name, its field, its default), in definition order, the runs table's
    (``RUNS_*``, from ``RunsTable``) last."""
    settings, runs = Settings(), RunsTable()
    for f in fields(Settings):
        if f.name != "runs":
            yield f"{PREFIX}{f.name.upper()}", f, getattr(settings, f.name)
    for r in fields(RunsTable):
        yield f"{PREFIX}RUNS_{r.name.upper()}", r, getattr(runs, r.name)


def format_default(value: Any, *, unset: str) -> str:
    """A default as the documentation shows it (the form the variable would take)."""
    if value is None:
        return unset
    if isinstance(value, dt.timedelta):
        seconds = int(value.total_seconds())
        for unit, size in (("h", 3600), ("m", 60)):
            if seconds and seconds % size == 0:
                if unit == "h" and seconds > 172800 and seconds % 86400 == 0:  # 90d, not 2160h
                    return f"`{seconds // 86400}d`"
                return f"`{seconds // size}{unit}`"
        return f"`{seconds}s`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`" if value else "empty"
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(name: str, f: Field[Any], default: Any) -> str:
    meta = f.metadata
    if "doc" not in meta:
        raise ValueError(f"{name} ({f.name}) has no documentation: add field(metadata=_doc(...)) in shared/settings.py")
    if default is None and not meta["unset"]:
        raise ValueError(f"{name} ({f.name}) defaults to None: say what unset means (_doc(unset=...))")
    cells = (f"`{name}`", format_default(default, unset=meta["unset"]),
             f"`{meta['chart']}`" if meta["chart"] else "", f"`{meta['flag']}`" if meta["flag"] else "",
             meta["used_by"], meta["doc"])
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def render() -> str:
    """The whole of docs/configuration.md."""
    table = ["| " + " | ".join(_COLUMNS) + " |", "|" + " --- |" * len(_COLUMNS)]
    table += [_row(name, f, default) for name, f, default in variables()]
    return _HEAD + "\n## Settings\n\n" + "\n".join(table) + "\n\n" + _TAIL


def main() -> int:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(Path.cwd()) if OUTPUT.is_relative_to(Path.cwd()) else OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
