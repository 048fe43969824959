"""The task routes' request and response models, generated from the declarations they stand for.

A ``POST /v1/<endpoint>`` request is an image plus its params: the task's ``Fields`` dataclass
(texts stripped, 1 to 1000 characters), the decoding options the endpoint accepts, each declared
with its bounds and the service's caps on :class:`~ofa_vl.generation.GenerationConfig`'s fields,
and ``model``. A response is the image's size, the model's name and the task's ``Result`` fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Annotated, Any, Union, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from pydantic.fields import FieldInfo

from ..generation import GenerationConfig
from ..options import bounds_of
from ..tasks import Result, TaskFields

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
MODEL = "a name from GET /v1/models (default: the first)"


def _decoding_field(f: dataclasses.Field[Any], kind: Any) -> tuple[Any, FieldInfo]:
    """An optional HTTP field of a decoding option: its bounds tightened by the service's caps."""
    limits = bounds_of(f.metadata)
    for key, cap in bounds_of(f.metadata["service"]).items():  # the tighter of the two
        limits[key] = min(cap, limits[key]) if key == "le" and key in limits else cap
    alias = f.metadata["service"].get("alias")
    return kind | None, Field(default=None, description=f.metadata["help"], alias=alias, **limits)


_HINTS = get_type_hints(GenerationConfig)
DECODING: dict[str, tuple[Any, FieldInfo]] = {
    f.name: _decoding_field(f, _HINTS[f.name])
    for f in dataclasses.fields(GenerationConfig)
    if "service" in f.metadata
}  # option -> its HTTP field: the options the service accepts


def request_model(
    name: str, fields: type[TaskFields], decoding: Collection[str], doc: str
) -> type[BaseModel]:
    """``model``, the task's ``fields`` (a ``str`` as :data:`Text`) and the ``decoding`` options."""
    hints = get_type_hints(fields)
    own: dict[str, Any] = {
        f.name: (
            Text if hints[f.name] is str else hints[f.name],
            ... if f.default is dataclasses.MISSING else f.default,
        )
        for f in dataclasses.fields(fields)
    }
    model: Any = (Union[str, None], Field(default=None, description=MODEL))  # noqa: UP007
    return create_model(  # type: ignore[no-any-return, call-overload]
        name, __config__=ConfigDict(extra="forbid", populate_by_name=False), __doc__=doc,
        model=model, **own, **{k: DECODING[k] for k in decoding},
    )  # fmt: skip


class Prediction(BaseModel):
    model: str = Field(description="the model that answered")
    width: int = Field(description="width of the decoded image (EXIF orientation applied)")
    height: int
    score: float | None = Field(default=None, description="the model's own score of its answer")
    confidence: float | None = Field(default=None, ge=0, le=1, description="in [0, 1]")
    n_best: list[dict[str, Any]] | None = Field(
        default=None, description="with n_best: the n best answers, best first, with these fields"
    )


BASE = {f.name for f in dataclasses.fields(Result)}


def response_model(result: type[Result], hidden: Collection[str] = ()) -> type[Prediction]:
    """A :class:`Prediction` with the fields of ``result`` (less ``hidden`` flags)."""
    hints = get_type_hints(result)
    own: dict[str, Any] = {
        f.name: (hints[f.name], ... if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(result)
        if f.name not in BASE and f.name not in hidden
    }
    return create_model(result.__name__.replace("Result", "Response"), __base__=Prediction, **own)
