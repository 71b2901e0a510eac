"""docs/configuration.md is what the settings' own definitions say, and so are the chart and the CLI flags."""

from __future__ import annotations

import datetime as dt
import difflib
import re
from pathlib import Path

import pytest

from hack.configuration_doc import COMMAND, OUTPUT, format_default, render, variables
from leoflow_staging.cli import build_parser
from shared.settings import PREFIX, Settings, from_env, unknown_settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "charts" / "leoflow-staging" / "templates"


def test_committed_doc_is_current() -> None:
    committed = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    expected = render()
    if committed != expected:
        diff = "".join(list(difflib.unified_diff(
            committed.splitlines(keepends=True), expected.splitlines(keepends=True),
            "docs/configuration.md (committed)", "docs/configuration.md (from shared/settings.py)"))[:60])
        raise AssertionError(f"docs/configuration.md is stale: run `{COMMAND}` (python -m hack.configuration_doc)\n"
                             + diff)


def test_every_setting_is_in_the_doc_and_nothing_else() -> None:
    names = [name for name, _, _ in variables()]
    assert len(names) == len(set(names))
    assert unknown_settings(dict.fromkeys(names, "")) == []  # each is a setting the programs read
    documented = set(re.findall(r"^\| `(LEOFLOW_STAGING_\w+)` \|", render(), re.MULTILINE))
    assert documented == set(names)
    assert unknown_settings({f"{PREFIX}NOT_A_SETTING": ""}) == [f"{PREFIX}NOT_A_SETTING"]


def test_every_setting_has_its_documentation() -> None:
    for name, f, default in variables():
        meta = f.metadata
        assert meta.get("doc", "").strip(), f"{name}: no documentation (field(metadata=_doc(...)))"
        assert meta.get("used_by"), f"{name}: say which commands read it"
        assert default is not None or meta.get("unset"), f"{name}: say what unset means"
        assert "|" not in meta["doc"] and "\n" not in meta["doc"], f"{name}: one line, no table pipes"


def test_defaults_are_shown_as_a_variable_would_spell_them() -> None:
    assert format_default(dt.timedelta(hours=24), unset="") == "`24h`"
    assert format_default(dt.timedelta(minutes=2), unset="") == "`2m`"
    assert format_default(dt.timedelta(seconds=90), unset="") == "`90s`"
    assert format_default(2.0, unset="") == "`2`" and format_default(0.5, unset="") == "`0.5`"
    assert format_default(True, unset="") == "`true`" and format_default(8443, unset="") == "`8443`"
    assert format_default(("a", "b"), unset="") == "`a,b`" and format_default((), unset="") == "empty"
    assert format_default(None, unset="unset (required)") == "unset (required)"


def test_documented_defaults_read_back_as_the_defaults() -> None:
    env = {name: "" if shown == "empty" else shown.strip("`")
           for name, _, default in variables()
           if default is not None and (shown := format_default(default, unset=""))}
    assert len(env) == sum(1 for _, _, default in variables() if default is not None)
    assert from_env(env) == Settings()


def _chart_mapping() -> tuple[dict[str, str], set[str]]:
    """(variable -> the chart value it is rendered from, every LEOFLOW_STAGING_* variable the chart sets)."""
    mapping: dict[str, str] = {}
    named: set[str] = set()
    serve_flags = {flag: name for name, f, _ in variables() if (flag := f.metadata.get("flag"))}
    for path in sorted(TEMPLATES.glob("*.*")):
        text = path.read_text(encoding="utf-8")
        named |= set(re.findall(r"name: (LEOFLOW_STAGING_\w+)", text))
        for name, absolute, value in re.findall(
                r'name: (LEOFLOW_STAGING_\w+),?\s+value: \{\{\s*(?:join "," )?\.(Values\.)?([\w.]+)', text):
            if not absolute:  # `.storageClass` inside `{{- with .Values.config }}` (templates/_helpers.tpl)
                assert "with .Values.config" in text, f"{path.name}: {name} from .{value}: which values block?"
            mapping[name] = value if absolute else f"config.{value}"
        for name, value in re.findall(
                r"name: (LEOFLOW_STAGING_\w+)\s+valueFrom:\s+secretKeyRef:\s+name: \{\{[^}]*?\.Values\.([\w.]+)",
                text):
            mapping[name] = value
        for flag, value in re.findall(r"- (--[\w-]+)=\{\{\s*\.Values\.([\w.]+)", text):
            assert flag in serve_flags, f"{path.name}: the chart passes {flag}, which is no setting's flag"
            mapping[serve_flags[flag]] = value
    return mapping, named


def test_the_chart_sets_what_the_doc_says() -> None:
    rendered, named = _chart_mapping()
    documented = {name: f.metadata["chart"] for name, f, _ in variables() if f.metadata.get("chart")}
    assert named <= {name for name, _, _ in variables()}, "the chart sets variables that are no settings"
    assert rendered == documented, (
        "the chart values in shared/settings.py (_doc(chart=...)) differ from what the chart's templates render; "
        f"fix the settings' documentation, then run `{COMMAND}`")


def test_flags_are_the_cli_flags(capsys: pytest.CaptureFixture[str]) -> None:
    flagged = {f.metadata["flag"]: f.name for _, f, _ in variables() if f.metadata.get("flag")}
    global_flags = {"--database-url", "--kubeconfig"}
    argv = [a for flag in sorted(global_flags) for a in (flag, "1")] + ["serve"]
    argv += [a for flag in sorted(flagged.keys() - global_flags) for a in (flag, "1")]
    args = build_parser().parse_args(argv)  # each documented flag exists, where the doc says it goes
    for flag, field_name in flagged.items():
        assert str(getattr(args, field_name)) == "1", f"{flag} does not set {field_name}"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    serve_flags = set(re.findall(r"(--[\w-]+)", capsys.readouterr().out)) - {"--help"}
    assert serve_flags == flagged.keys() - global_flags, "a serve flag is missing from the settings' documentation"
