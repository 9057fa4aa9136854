"""Session fixtures of the full-size smoke runs (built once for the CPU and GPU tests)."""

from scale_helpers import ctrate, prepared  # noqa: F401  (pytest fixtures)
