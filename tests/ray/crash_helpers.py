"""A scan path whose use kills the process reading it (a stand-in for a scan that OOM-kills its worker)."""

from __future__ import annotations

import os


class WorkerKillingPath(os.PathLike):
    """``os.fspath`` of it ends the process at once, as the kernel's OOM killer would."""

    def __fspath__(self) -> str:
        os._exit(137)

    def __str__(self) -> str:
        return "worker-killing-scan.nii.gz"
