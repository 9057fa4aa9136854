"""Shared pieces of every schema: strict models (unknown keys and NaN/inf refused) and safe paths.

Every section of a workflow and of a run's ``medmm.json`` derives from `Strict`, so a typo is an
error, never a silent default, and ``nan`` / ``inf`` never reach a computation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

#: Folders a workflow may never write into or read its run/cache trees from.
SYSTEM_FOLDERS = ("/etc", "/bin", "/sbin", "/usr", "/boot", "/dev", "/proc", "/sys", "/lib", "/lib64", "/var/lib")


class Strict(BaseModel):
    """Base of every schema: unknown keys are errors, floats must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _safe_path(path: Path) -> Path:
    """Refuse ``..`` components and system folders (a workflow is data from anyone)."""
    if ".." in Path(path).parts:
        raise ValueError(f"path {str(path)!r} may not contain '..'")
    text = str(Path(path).expanduser())
    for folder in SYSTEM_FOLDERS:
        if text == folder or text.startswith(folder + "/"):
            raise ValueError(f"path {str(path)!r} is inside the system folder {folder}")
    return path


#: A path a workflow writes to or caches in: no ``..`` escapes, not a system folder.
SafePath = Annotated[Path, AfterValidator(_safe_path)]
