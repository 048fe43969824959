"""The task routes' request and response models, generated from the declarations they stand for.

A ``POST /v1/<endpoint>`` request is an image plus ``model``, the task's ``Fields`` (texts
stripped, 1 to 1000 characters) and the decoding options it accepts, bounded as declared on
:class:`~ofa_vl.generation.GenerationConfig`'s fields; a response is the model, the image's size
and the task's ``Result`` fields.
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
SERVED = {f.name: f for f in dataclasses.fields(GenerationConfig) if "service" in f.metadata}


def limits(option: str) -> dict[str, Any]:
    """A served option's declared bounds tightened by the service's caps (``ge``, ``gt``, ``le``)."""
    meta = SERVED[option].metadata
    out: dict[str, Any] = bounds_of(meta)
    for key, cap in bounds_of(meta["service"]).items():
        out[key] = min(cap, out[key]) if key == "le" and key in out else cap
    return out


def _http_field(option: str) -> tuple[Any, FieldInfo]:
    """A served option's optional HTTP field: its help, its HTTP name, its :func:`limits`."""
    meta, alias = SERVED[option].metadata, SERVED[option].metadata["service"].get("alias")
    info = Field(default=None, description=meta["help"], alias=alias, **limits(option))
    return get_type_hints(GenerationConfig)[option] | None, info


DECODING = {name: _http_field(name) for name in SERVED}  # option -> its HTTP field


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
    model = (str | None, Field(default=None, description="a name from GET /v1/models"))
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
    n_best: list[dict[str, Any]] | None = Field(default=None, description="the n best, best first")


def response_model(result: type[Result], hidden: Collection[str] = ()) -> type[Prediction]:
    """A :class:`Prediction` with the fields of ``result`` (less ``hidden`` flags)."""
    skip = {*hidden, *(f.name for f in dataclasses.fields(Result))}
    name = result.__name__.replace("Result", "Response")
    return create_model(name, __base__=Prediction, **definitions(result, skip))
