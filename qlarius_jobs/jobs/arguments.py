"""A job's arguments: pydantic models checked at every door (``defer``, Procrastinate's job
manager, the worker before the body runs), and the one-line message when they are wrong."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError


class InvalidJobArguments(ValueError):
    """The job's arguments are wrong: it fails at once, is not retried, and writes nothing."""


BIGINT_MAX = 2**63 - 1
# A row id: positive, and within PostgreSQL's bigint (a larger one fails every attempt).
RowId = Annotated[int, Field(gt=0, le=BIGINT_MAX)]
_STRICT_ROW_ID: TypeAdapter[int] = TypeAdapter(Annotated[RowId, Strict()])


def row_id(name: str, value: object) -> int:
    """``value`` when it is a ``RowId`` (an int, not a bool); otherwise a one-line ValueError
    naming ``name``. For ids given to the API rather than in a job's arguments."""
    try:
        return _STRICT_ROW_ID.validate_python(value)
    except ValidationError:
        raise ValueError(f"{name} must be a positive integer up to 2^63-1, got {value!r}") from None


class JobArgs(BaseModel):
    # Strict: "5" is not an id, true is not an id, unknown keys are mistakes.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoArgs(JobArgs):
    # Procrastinate's periodic deferrer passes the tick's timestamp.
    timestamp: int | None = None


class TargetArgs(JobArgs):
    target_id: RowId


class MeFileArgs(JobArgs):
    me_file_id: RowId


class BandArgs(JobArgs):
    band_id: RowId


A = TypeVar("A", bound=JobArgs)


def parse_args(task_name: str, model: type[A], raw: Any) -> A:
    if not isinstance(raw, dict):
        raise InvalidJobArguments(f"{task_name}: invalid arguments: a JSON object is required")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_field(err['loc'])}: {err['msg']}"
            + ("" if err["type"] == "missing" else f" (got {short_repr(err.get('input'))})")
            for err in exc.errors()
        )
    # Raised outside the handler: no pydantic dump chained to the one-line message.
    raise InvalidJobArguments(f"{task_name}: invalid arguments: {problems}")


def _field(loc: tuple[Any, ...]) -> str:
    """A field's name for a one-line message: as it is when it is a plain name, else its repr
    (a key with a newline or quotes stays on one line), cut to 60 characters."""
    name = ".".join(str(p) for p in loc) or "arguments"
    return name if name.replace(".", "_").isidentifier() and len(name) <= 60 else short_repr(name)


def short_repr(value: Any, limit: int = 60) -> str:
    """A value as it was given (repr), cut to ``limit`` characters."""
    return cut(repr(value), limit)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
