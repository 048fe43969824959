"""A compiled decoding step: :meth:`Decoder.one_step` through ``torch.compile`` (inductor).

The step reads the whole preallocated KV cache and takes its position as a tensor, so one graph
serves every step of a decoding; another batch size or length limit compiles once more, then
with dynamic shapes (``torch._dynamo``'s automatic dynamic). Opt-in (``compile=True``): the
compilation costs tens of seconds once per process; benchmarks/README.md has the measurements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..options import check_compile
from .decoder import Decoder

if TYPE_CHECKING:
    from .ofa import OFA


def compile_decoder(model: OFA, mode: str | None = None) -> None:
    """Run ``model``'s decoding steps (one token per text row) through a compiled step, in place.

    Apply after the precision (``apply_precision``): the graph is traced for the final weights.
    Image-code rows (text-to-image) and multi-token steps keep the eager :meth:`Decoder.step`.
    ``mode`` is ``torch.compile``'s (``"reduce-overhead"``: CUDA graphs on a GPU).
    """
    layers = model.decoder.layers.modules()  # the step compiled (the logits are computed outside)
    legacy = any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in layers)
    check_compile(True, model.device, "int8-legacy" if legacy else "fp32")
    model.decoder.compiled_step = torch.compile(Decoder.one_step, fullgraph=True, mode=mode)
