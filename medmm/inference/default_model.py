"""Which model ``medmm infer`` uses when none is named: ``$MEDMM_MODEL``, else the registered default.

``medmm demo`` and ``medmm train --default`` register their run dir as the default (one line in
``$MEDMM_HOME/default_model``, ``~/.config/medmm`` unless set), so ``medmm infer scan.dcm`` works
as written after either; with neither, the error says how to get a model.
"""

from __future__ import annotations

import os
from pathlib import Path

from medmm.errors import MedmmConfigError
from medmm.io.writers import atomic_write_text

ENV_MODEL = "MEDMM_MODEL"
ENV_HOME = "MEDMM_HOME"


def registry_file() -> Path:
    """The file holding the default model's run dir."""
    return Path(os.environ.get(ENV_HOME) or "~/.config/medmm").expanduser() / "default_model"


def register_default(run_dir: str | Path) -> Path:
    """Make ``run_dir`` the model ``medmm infer`` uses without ``--model``; returns the registry file."""
    return atomic_write_text(registry_file(), str(Path(run_dir).resolve()) + "\n")


def resolve_model(run_dir: str | Path | None) -> tuple[Path, str | None]:
    """``(run dir, one line saying where it came from)``; the line is None when ``run_dir`` is given.

    Raises:
        MedmmConfigError: no model given, none in ``$MEDMM_MODEL`` and none registered.
    """
    if run_dir is not None:
        return Path(run_dir), None
    env = os.environ.get(ENV_MODEL)
    if env:
        return Path(env), f"model: {env} (from ${ENV_MODEL})"
    registry = registry_file()
    if registry.is_file():
        stored = registry.read_text(encoding="utf-8").strip()
        if stored:
            return Path(stored), f"model: {stored} (the default registered by `medmm demo` / `medmm train --default`)"
    raise MedmmConfigError("--model", f"no model given: pass --model RUN_DIR, set ${ENV_MODEL}, or register a default "
                                      "with `medmm demo` or `medmm train --default`")


def output_source(path: str | Path) -> Path:
    """What outputs are named after: a DICOM file stands for its series, i.e. its folder."""
    path = Path(path)
    name = path.name.lower()
    is_image_file = name.endswith((".nii", ".nii.gz", ".zip", ".csv", ".jsonl"))
    if path.is_file() and not is_image_file and path.parent.name:
        return path.parent
    return path
