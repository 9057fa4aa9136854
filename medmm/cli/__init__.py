"""The ``medmm`` command: one subcommand per stage, each defined in its own module.

Subcommands are imported only when invoked so ``medmm --help`` stays instant; every user error
(:class:`~medmm.errors.MedmmError`) is printed on one line and exits with code 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from medmm.errors import MedmmError

# subcommand -> (module, attribute, one-line help)
SUBCOMMANDS = {
    "info": ("medmm.cli.info", "info", "Show what would be loaded from a DICOM/NIfTI path (no PHI)."),
    "data": ("medmm.cli.data", "data", "Synthetic data and manifest tools."),
    "train": ("medmm.cli.train", "train", "Train a model from a workflow YAML."),
    "infer": ("medmm.cli.infer", "infer", "Diagnose a scan (or a batch) with a trained model."),
    "evaluate": ("medmm.cli.evaluate", "evaluate", "Evaluate a trained model on a manifest."),
    "demo": ("medmm.cli.demo", "demo", "Synthetic data -> train -> infer, end to end."),
    "labeler": ("medmm.cli.labeler", "labeler", "Train a learned report labeler from labelled reports."),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        module, attr, _ = SUBCOMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in SUBCOMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medmm")
def cli() -> None:
    """medmm: chest-CT diagnosis with a report, an ontology and the evidence for both."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning medmm errors into one line on stderr + exit 2."""
    try:
        cli.main(args=argv, prog_name="medmm", standalone_mode=False)
    except MedmmError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
