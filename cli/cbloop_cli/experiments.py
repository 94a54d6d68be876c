"""`cbloop experiments list|show|create|update|archive|history`: the catalog from the shell.

They write the same store the admin API writes (`cbloop.experiments`); running workers and
the loop follow within a poll. `catalog_settings` is what every command that serves or
learns runs on: the settings with the store's experiments in place of config.yaml's.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
import yaml

from cbloop.settings import Settings
from cbloop_cli.common import ConfigOption, settings_from
from cbloop_cli.errors import fail

if TYPE_CHECKING:
    from cbloop.experiments import ExperimentCatalog, ExperimentRecord

FormatOption = Annotated[str, typer.Option("--format", "-f", help="table | json")]
WhyOption = Annotated[str, typer.Option("--why", help="Why (kept in the history).")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who (default: your user name).")]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="KEY=VALUE with a dotted key, e.g. exploration.epsilon=0.1 (repeatable).",
    ),
]
FileOption = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="YAML mapping of experiment settings (as under experiments.<name> in config.yaml).",
        exists=True,
        dir_okay=False,
    ),
]


def open_catalog(settings: Settings) -> ExperimentCatalog:
    from cbloop.experiments import ExperimentCatalog
    from cbloop.storage import open_store

    return ExperimentCatalog(open_store(settings.storage))


def catalog_settings(settings: Settings) -> Settings:
    """`settings` with the catalog's active experiments (config.yaml seeds absent ones)."""
    from cbloop.experiments import resolved_settings

    return resolved_settings(settings, open_catalog(settings))


def catalog_settings_from(config: Path | None) -> Settings:
    return catalog_settings(settings_from(config))


def _value(text: str) -> Any:
    # As the environment overrides: scalars stay strings for pydantic to coerce, so VW
    # arguments like "-q ::" are never read as YAML; only collections and null are parsed.
    stripped = text.strip()
    if stripped.startswith(("[", "{")) or stripped in ("null", "~"):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError:
            return text
    return text


def changes_from(file: Path | None, assignments: list[str]) -> dict[str, Any]:
    """The settings mapping given by --file, then each --set over it."""
    data: dict[str, Any] = {}
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            fail(f"{file} is not valid YAML: {exc}")
        if loaded is not None and not isinstance(loaded, dict):
            fail(f"{file} must hold a mapping of experiment settings")
        data = loaded or {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set {item!r}: use KEY=VALUE, e.g. exploration.epsilon=0.1")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = _value(raw)
    return data


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return f"{getpass.getuser()} (cli)"
    except (KeyError, OSError):
        return "cli"


def record_json(record: ExperimentRecord) -> dict[str, Any]:
    body = record.model_dump(mode="json", exclude={"write_id"})
    body["vw_arguments"] = record.experiment().vw_arguments()
    return body


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        fail(f"--format must be table or json, not {fmt!r}")


def _print_records(records: list[ExperimentRecord], fmt: str, title: str) -> None:
    if fmt == "json":
        typer.echo(orjson.dumps([record_json(r) for r in records], option=orjson.OPT_INDENT_2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("name", "version", "state", "VW arguments", "by", "at", "why"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.name,
            str(r.version),
            "archived" if r.archived else "active",
            r.experiment().vw_arguments(),
            r.by,
            r.at,
            r.why + (f" [{r.fresh_model_reason}]" if r.fresh_model_reason else ""),
        )
    Console().print(table)


def _print_record(record: ExperimentRecord, fmt: str) -> None:
    if fmt == "json":
        typer.echo(orjson.dumps(record_json(record), option=orjson.OPT_INDENT_2))
        return
    state = "archived" if record.archived else "active"
    typer.echo(f"{record.name} version {record.version} ({state})")
    typer.echo(f"  by {record.by} at {record.at}: {record.why}")
    if record.fresh_model_reason:
        typer.echo(f"  fresh model {record.fresh_model_id}: {record.fresh_model_reason}")
    typer.echo(f"  VW arguments: {record.experiment().vw_arguments()}")
    typer.echo(
        "  " + yaml.safe_dump(record.settings, sort_keys=True).replace("\n", "\n  ").rstrip()
    )


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="experiments",
        help="Experiments in the store: list, show, create, update, archive, history.",
        no_args_is_help=True,
    )
    app.add_typer(group)

    @group.command("list")
    def list_(
        all_: Annotated[bool, typer.Option("--all", help="Include archived ones.")] = False,
        fmt: FormatOption = "table",
        config: ConfigOption = None,
    ) -> None:
        """Every experiment's current version."""
        _check_format(fmt)
        settings = settings_from(config)
        catalog = open_catalog(settings)
        catalog.seed(settings)
        _print_records(catalog.list(include_archived=all_), fmt, "experiments")

    @group.command()
    def show(name: str, fmt: FormatOption = "table", config: ConfigOption = None) -> None:
        """One experiment's current version and settings."""
        _check_format(fmt)
        settings = settings_from(config)
        catalog = open_catalog(settings)
        catalog.seed(settings)
        _print_record(catalog.get(name), fmt)

    @group.command()
    def history(name: str, fmt: FormatOption = "table", config: ConfigOption = None) -> None:
        """Every version of one experiment, oldest first."""
        _check_format(fmt)
        settings = settings_from(config)
        catalog = open_catalog(settings)
        catalog.seed(settings)
        _print_records(catalog.history(name), fmt, f"{name}: history")

    @group.command()
    def create(
        name: str,
        *,
        file: FileOption = None,
        assignments: SetOption = None,
        why: Annotated[str, typer.Option("--why", help="Why (kept in the history).")] = "created",
        by: ByOption = None,
        fmt: FormatOption = "table",
        config: ConfigOption = None,
    ) -> None:
        """A new experiment; running workers serve it within service.model_poll_seconds."""
        _check_format(fmt)
        data = changes_from(file, assignments or [])
        settings = settings_from(config)
        catalog = open_catalog(settings)
        catalog.seed(settings)
        _print_record(catalog.create(name, data, by=_who(by), why=why), fmt)

    @group.command()
    def update(
        name: str,
        *,
        why: WhyOption,
        file: FileOption = None,
        assignments: SetOption = None,
        by: ByOption = None,
        fmt: FormatOption = "table",
        config: ConfigOption = None,
    ) -> None:
        """Change some settings (a new version); a change of VW arguments starts a fresh model."""
        _check_format(fmt)
        data = changes_from(file, assignments or [])
        if not data:
            fail("nothing to change: give --set KEY=VALUE or --file")
        settings = settings_from(config)
        catalog = open_catalog(settings)
        catalog.seed(settings)
        before = catalog.get(name).version
        record = catalog.update(name, data, by=_who(by), why=why)
        if record.version == before:
            typer.echo(f"{name}: nothing changed (version {before} already says so)")
            return
        _print_record(record, fmt)

    @group.command()
    def archive(
        name: str,
        why: WhyOption,
        by: ByOption = None,
        fmt: FormatOption = "table",
        config: ConfigOption = None,
    ) -> None:
        """Stop serving and learning the experiment; its models and history stay."""
        _check_format(fmt)
        settings = settings_from(config)
        catalog = open_catalog(settings)
        catalog.seed(settings)
        _print_record(catalog.archive(name, by=_who(by), why=why), fmt)


class CatalogWinnerSink:
    """Puts a winning setting (`cbloop search --apply`) into the catalog as the next version.

    The search's evidence is kept in the version; when the winner's VW arguments differ, the
    catalog starts a fresh model as for any such change. Meant for the `WinnerSink` slot of
    `cbloop_cli.tuning` (its `RunFolderSink` stood in for the store).
    """

    def __init__(self, settings: Settings, by: str | None = None) -> None:
        self.settings = settings
        self.by = by

    def apply_winner(
        self, experiment: str, vw_args: str, exploration: dict[str, Any], evidence: dict[str, Any]
    ) -> str:
        catalog = open_catalog(self.settings)
        catalog.seed(self.settings)
        record = catalog.update(
            experiment,
            {"vw_args": vw_args, "exploration": exploration},
            by=_who(self.by),
            why="cbloop search --apply: the winning learning settings",
            evidence=evidence,
        )
        return f"experiment {experiment!r} version {record.version} in the store"
