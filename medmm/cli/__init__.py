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
    "serve": ("medmm.cli.serve", "serve", "Serve a model over HTTP and DICOM (needs medmm[serve])."),
}


def path_value(ctx: click.Context | None, param: click.Parameter | None, value):
    """Click callback for path arguments/options: refuse an empty or blank path.

    ``Path("")`` is ``Path(".")``, so an empty argument (e.g. an unset shell variable) would
    silently mean "the current folder"; it is a user error instead (exit 2).
    """
    from pathlib import Path

    if value is None or isinstance(value, tuple):
        return value
    if not str(value).strip():
        name = param.opts[0] if param is not None and param.opts and param.opts[0].startswith("-") else (
            (param.name or "path").upper() if param is not None else "PATH")
        from medmm.errors import MedmmInputError

        raise MedmmInputError(None, f"{name}: empty path given; name a file or folder")
    return Path(value)


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


def _error(message: str, code: int) -> None:
    from medmm.io.text import one_line

    click.echo(f"error: {one_line(' '.join(str(message).split()))}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user errors into one line on stderr + exit 2.

    Every line printed here goes through :func:`medmm.io.text.one_line`: a value typed by the user
    (a path with a newline, an option value) cannot forge a second ``error:`` line.
    """
    from medmm.io.capture import library_warnings_deidentified

    try:
        with library_warnings_deidentified():
            cli.main(args=argv, prog_name="medmm", standalone_mode=False)
    except MedmmError as err:
        _error(str(err), 2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as err:
        if err.ctx is not None:
            click.echo(err.ctx.get_usage(), err=True)
        _error(err.format_message(), err.exit_code)
    except click.ClickException as err:
        _error(err.format_message(), err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except MemoryError:  # a hostile header got past the size checks: still one line, not a traceback
        _error("not enough memory for this input (is its declared size plausible?)", 2)
