"""`cbloop import` (Personalizer / learning-loop DSJSON history) and `cbloop import-model`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import orjson
import typer

from cbloop_cli.common import ConfigOption
from cbloop_cli.errors import FAILURE_EXIT, fail
from cbloop_cli.experiments import catalog_settings_from

ExperimentOption = Annotated[
    str, typer.Option("--experiment", "-e", help="Experiment the history or model is for")
]
_REASONS_SHOWN = 20


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_history(
        files: Annotated[
            list[Path],
            typer.Argument(
                help="DSJSON files (one joined interaction a line)", exists=True, dir_okay=False
            ),
        ],
        experiment: ExperimentOption = "default",
        no_ingest: Annotated[
            bool, typer.Option("--no-ingest", help="Write the segments; leave ingest to the loop")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON")] = False,
        config: ConfigOption = None,
    ) -> None:
        """Import Personalizer DSJSON logs as decisions and outcomes, with their propensities.

        Each file is imported once (by its SHA-256); lines that do not parse are counted and
        quarantined with their line numbers under imports/<experiment>/<digest>/.
        """
        from cbloop.storage import open_store
        from cbloop_pipeline.dsjson_import import import_file, quarantine_key
        from cbloop_pipeline.ingest import ingest
        from cbloop_pipeline.warehouse import WarehouseBusy, connect

        settings = catalog_settings_from(config)
        if experiment not in settings.experiments:
            known = ", ".join(sorted(settings.experiments))
            fail(f"unknown experiment {experiment!r} (configured: {known})")
        store = open_store(settings.storage)
        results = [import_file(store, experiment, path) for path in files]
        ingested = None
        if not no_ingest and any(not r.already_imported for r in results):
            try:
                con = connect(settings.warehouse)
            except WarehouseBusy as exc:
                # The segments are written: the running loop ingests them on its next cycle.
                typer.echo(f"not ingested now ({exc}); the learning loop will ingest them")
            else:
                try:
                    ingested = ingest(con, store)
                finally:
                    con.close()
        if as_json:
            payload = {
                "files": [r.to_json() for r in results],
                "ingested_decisions": ingested.decision_lines if ingested else 0,
            }
            typer.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        for r in results:
            if as_json:
                break
            if r.already_imported:
                typer.echo(f"{r.path}: already imported (sha256 {r.digest[:12]}), nothing written")
                continue
            typer.echo(
                f"{r.path}: {r.decisions} decisions, {r.rewards} rewards, {r.activations} "
                f"activations from {r.lines} lines ({r.first_ts} .. {r.last_ts}); "
                f"{r.duplicates} duplicate event ids dropped, {r.skipped_pdrop} pdrop lines "
                f"skipped, {r.quarantined} lines quarantined"
            )
            for line_no, reason in r.reasons[:_REASONS_SHOWN]:
                typer.echo(f"  line {line_no}: {reason}")
            if len(r.reasons) > _REASONS_SHOWN:
                typer.echo(f"  ... and {len(r.reasons) - _REASONS_SHOWN} more")
            if r.quarantined:
                typer.echo(f"  quarantined lines: {quarantine_key(experiment, r.digest)}")
        if ingested is not None and not as_json:
            typer.echo(
                f"ingested {ingested.decision_lines} decisions, {ingested.outcome_lines} "
                f"outcomes ({ingested.rejected_lines} rejected)"
            )
        if any(r.quarantined and not r.already_imported for r in results):
            raise typer.Exit(FAILURE_EXIT)

    @app.command("import-model")
    def import_model(
        model: Annotated[
            Path,
            typer.Argument(
                help="VW model file (e.g. exported from Personalizer)", exists=True, dir_okay=False
            ),
        ],
        experiment: ExperimentOption = "default",
        config: ConfigOption = None,
    ) -> None:
        """Make a VW model file the experiment's current (starting) model, if it is compatible.

        Checked as the service checks every model it serves, after the options stored in the
        file are compared with the experiment's VW arguments; an incompatible model changes
        nothing and the command says which options differ.
        """
        from cbloop.registry import ModelRegistry
        from cbloop.storage import open_store
        from cbloop_service.personalizer.models import import_model as run_import
        from cbloop_service.policy import ModelLoader

        settings = catalog_settings_from(config)
        exp = settings.experiment(experiment)
        registry = ModelRegistry(open_store(settings.storage))
        with tempfile.TemporaryDirectory(prefix="cbloop-import-model-") as scratch:
            meta = run_import(
                ModelLoader(registry, Path(scratch)),
                experiment,
                exp,
                model,
                note=f"imported from {model.name} by cbloop import-model",
            )
        typer.echo(
            f"{model}: imported as {meta.model_id}, now the current model of {experiment!r} "
            "(workers swap it in within service.model_poll_seconds)"
        )
