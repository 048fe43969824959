"""The task routes' request and response models, generated from the declarations they stand for.

A ``POST /v1/<endpoint>`` request is an image plus its params: the task's ``Fields`` dataclass
(texts stripped, 1 to 1000 characters), the decoding options the endpoint accepts, each declared
with its bounds and the service's caps on :class:`~ofa_vl.generation.GenerationConfig`'s fields,
and ``model``. A response is the image's size, the model's name and the task's ``Result`` fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Annotated, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from pydantic.fields import FieldInfo

from ..generation import GenerationConfig
from ..options import bounds_of
from ..tasks import Result, TaskFields

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]
MODEL = "a name from GET /v1/models (default: the first)"


def _decoding_field(f: dataclasses.Field[Any], kind: Any) -> tuple[Any, FieldInfo]:
    """An optional HTTP field of a decoding option: its bounds tightened by the service's caps."""
    limits: dict[str, Any] = bounds_of(f.metadata)
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


def definitions(cls: type, skip: Collection[str] = (), text: Any = str) -> dict[str, Any]:
    """pydantic's (type, default) of each field of dataclass ``cls`` (a ``str`` as ``text``)."""
    hints = get_type_hints(cls)
    return {
        f.name: (text if hints[f.name] is str else hints[f.name],
                 ... if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(cls) if f.name not in skip
    }  # fmt: skip


def request_model(
    name: str, fields: type[TaskFields], decoding: Collection[str], doc: str
) -> type[BaseModel]:
    """``model``, the task's ``fields`` (a ``str`` as :data:`Text`) and the ``decoding`` options."""
    model: Any = (str | None, Field(default=None, description=MODEL))
    return create_model(  # type: ignore[no-any-return, call-overload]
        name, __config__=ConfigDict(extra="forbid"), __doc__=doc, model=model,
        **definitions(fields, text=Text), **{k: DECODING[k] for k in decoding},
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


def response_model(result: type[Result], hidden: Collection[str] = ()) -> type[Prediction]:
    """A :class:`Prediction` with the fields of ``result`` (less ``hidden`` flags)."""
    skip = {*hidden, *(f.name for f in dataclasses.fields(Result))}
    name = result.__name__.replace("Result", "Response")
    return create_model(name, __base__=Prediction, **definitions(result, skip))
