"""Reading a workflow: YAML (data only) + dotted overrides → a validated `WorkflowConfig`.

The YAML is data: it is read with ``yaml.safe_load`` (a
``!!python/...`` tag is an error, never executed) and validated by pydantic models that forbid
unknown keys, so a typo is reported with the file, the dotted key path and a "did you mean".

>>> cfg = load_workflow("workflows/ct_chest_demo.yaml", ["training.epochs=2"])  # doctest: +SKIP
>>> cfg.training.epochs                                                          # doctest: +SKIP
2
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from medmm.config.workflow import WorkflowConfig
from medmm.errors import MedmmConfigError

__all__ = ["load_workflow", "parse_overrides", "apply_overrides", "format_validation_error"]

_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


# ------------------------------------------------------------------------------------ loading
def parse_overrides(overrides: list[str] | None, where: str = "--set") -> dict[str, Any]:
    """Parse ``["a.b=c", ...]`` into ``{"a.b": value}``; values are YAML scalars/lists (safe_load)."""
    parsed: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise MedmmConfigError(where, f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise MedmmConfigError(where, f"{key}: value {raw!r} is not a YAML scalar/list ({_first_line(err)})") from None
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string
        parsed[key] = value
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], where: str = "--set") -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides applied (sections created as needed)."""
    import copy

    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = out
        parts = dotted.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise MedmmConfigError(where, f"{'.'.join(parts[:i + 1])} is a value, not a section, in override {dotted}")
            node = child
        node[parts[-1]] = value
    return out


def load_workflow(path: str | Path | dict[str, Any] | WorkflowConfig | None,
                  overrides: list[str] | dict[str, Any] | None = None) -> WorkflowConfig:
    """Read, override and validate a workflow.

    Args:
        path: a YAML file, an already-parsed dict, a `WorkflowConfig`, or None (all defaults).
        overrides: ``["training.epochs=2", ...]`` (values parsed as YAML) or ``{"training.epochs": 2}``.

    Returns:
        The validated `WorkflowConfig`.

    Raises:
        MedmmConfigError: unreadable file, invalid YAML (incl. ``!!python`` tags), an unknown key
            or a value of the wrong type — naming the file and the dotted key path.
    """
    where = "<workflow>"
    if isinstance(path, WorkflowConfig):
        raw: Any = path.model_dump(mode="json")
    elif isinstance(path, dict):
        raw = path
    elif path is None:
        raw = {}
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise MedmmConfigError(where, f"cannot read workflow ({err.strerror or err})") from None
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise MedmmConfigError(where, f"not a valid data-only YAML workflow: {_first_line(err)}") from None
        raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise MedmmConfigError(where, f"a workflow must be a mapping of sections, got {type(raw).__name__}")
    if overrides:
        parsed = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
        raw = apply_overrides(raw, parsed)
    try:
        return WorkflowConfig.model_validate(raw)
    except ValidationError as err:
        raise MedmmConfigError(where, format_validation_error(err)) from None


def format_validation_error(err: ValidationError, model: type[BaseModel] = WorkflowConfig) -> str:
    """One line: the first error's dotted key path and message (+ "did you mean"), and a count."""
    errors = err.errors()
    first = errors[0]
    loc = [str(p) for p in first["loc"]]
    dotted = ".".join(loc) or "<top>"
    if first["type"] == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"; did you mean {'.'.join(loc[:-1] + [close[0]])!r}?" if close else f"; allowed: {', '.join(allowed)}"
        message = f"{dotted}: unknown key{hint}"
    else:
        got = first.get("input")
        got_text = "" if isinstance(got, dict) or first["type"] == "missing" else f" (got {got!r:.60})"
        message = f"{dotted}: {first['msg']}{got_text}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return message


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the (nested) pydantic model found by walking ``loc`` from ``model``."""
    current: Any = model
    for part in loc:
        cls = _model_class(current)
        if cls is None or part not in cls.model_fields:
            return []
        current = cls.model_fields[part].annotation
    cls = _model_class(current)
    return sorted(cls.model_fields) if cls is not None else []


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside ``annotation`` (unwrapping ``X | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_class(arg)
            if found is not None:
                return found
    return None


def _first_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text[:200]
