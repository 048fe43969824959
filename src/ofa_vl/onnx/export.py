"""``ofa export MODEL OUT --format onnx``: a model folder of two ONNX graphs.

``encoder.onnx`` (:class:`~ofa_vl.onnx.graphs.EncoderGraph`) and ``decoder.onnx``
(:class:`~ofa_vl.onnx.graphs.DecoderStepGraph`), written by ``torch.onnx.export``'s dynamo
exporter (``torch.export`` + onnxscript) at opset :data:`OPSET`, checked by ``onnx.checker``; the
tokenizer, ``pipeline.json`` and ``MODEL_CARD.md`` beside them. Each graph's metadata holds the
:class:`~ofa_vl.config.OFAConfig` JSON, as this project's safetensors files do.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.export import Dim

from ..api import OFAPipeline, get_model
from ..config import OFAConfig
from ..errors import OFAValueError
from ..model import OFA
from ..model_folder import ModelFolder, model_dir
from ..runs import publish
from .graphs import DECODER_FILE, ENCODER_FILE, FORMAT, DecoderStepGraph, EncoderGraph, GraphNames

# ONNX 1.13's opset: LayerNormalization is one op; ONNX Runtime, TensorRT, OpenVINO and ORT-web run it
OPSET = 18
CARD_FILE = "MODEL_CARD.md"
FORMATS = ("onnx",)
QUANTIZE = ("int8",)  # onnxruntime.quantization.quantize_dynamic of the MatMuls
_PROTO_LIMIT = 2**31 - 2**26  # a protobuf holds < 2 GiB: bigger graphs keep their weights beside


def _example(model: OFA, image_size: int) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Inputs of both graphs to trace with: sizes above 1 everywhere (``torch.export`` fixes a
    dimension traced at 1), padding in the text; (encoder args, decoder args)."""
    cfg = model.cfg
    B, G, P = 2, 3, 4
    ids = torch.full((B, 5), 4, dtype=torch.long)
    ids[0, -2:] = cfg.pad_token_id
    images = torch.zeros(B, 3, image_size, image_size)
    with torch.no_grad():
        enc = EncoderGraph(model)(ids, images, torch.ones(B, dtype=torch.bool))
    shape = (B * G, cfg.num_heads, P, cfg.head_dim)
    past = [torch.zeros(shape) for _ in range(2 * cfg.decoder_layers)]
    tokens = torch.full((B * G, 2), 4, dtype=torch.long)
    encoder = (ids, images, torch.ones(B, dtype=torch.bool))
    return encoder, (tokens, enc[1], enc[3], list(enc[4:]), past)  # tokens, pad, pos_k, cross, past


def _dynamic_shapes(cfg: OFAConfig) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Batch, lengths and image sides free; the bounds OFA checks (``options.check_decoding``)."""
    batch, rows = Dim("batch", min=1), Dim("rows", min=1)  # rows = batch x beams
    text = Dim("text", min=1, max=cfg.max_positions)
    side = Dim("side", min=32, max=cfg.image_bucket_size * 16)  # square, as OFA resizes
    source = Dim("source", min=1)  # image patches + text
    past = Dim("past", min=0, max=cfg.max_positions - 1)
    new = Dim("new", min=1, max=cfg.max_positions)
    layers = 2 * cfg.decoder_layers
    encoder = ({0: batch, 1: text}, {0: batch, 2: side, 3: side}, {0: batch})
    cross = [{0: batch, 2: source}] * layers
    decoder = ({0: rows, 1: new}, {0: batch, 1: source}, {0: batch, 2: source}, cross,
               [{0: rows, 2: past}] * layers)  # fmt: skip
    return encoder, decoder


def _export_graph(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    dynamic: tuple[Any, ...],
    names: tuple[list[str], list[str]],
    metadata: dict[str, str],
    path: Path,
) -> None:
    import onnx
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # the math kernel's output strides are those of torch.export's own decomposition of SDPA
    with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        program = torch.onnx.export(
            module, args, dynamo=True, opset_version=OPSET, dynamic_shapes=dynamic,
            input_names=names[0], output_names=names[1], external_data=False, verbose=False,
        )  # fmt: skip
    assert program is not None
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    external = proto.ByteSize() > _PROTO_LIMIT
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:  # whole or absent, as every file the project writes
        onnx.save(proto, str(tmp), save_as_external_data=external, location=path.name + ".data")
        onnx.checker.check_model(str(tmp), full_check=True)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def quantize_graphs(folder: Path) -> None:
    """Both graphs of an export in place: dynamic int8 (weights per tensor, activations per
    call) of their MatMuls; the metadata's ``quantize`` says so."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in (ENCODER_FILE, DECODER_FILE):
        path = folder / name
        tmp = path.with_name(f".{path.name}.{os.getpid()}.int8")
        try:
            meta = {
                p.key: p.value
                for p in onnx.load(str(path), load_external_data=False).metadata_props
            }
            quantize_dynamic(
                path, tmp, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8
            )
            proto = onnx.load(str(tmp))
            del proto.metadata_props[:]
            onnx.helper.set_model_props(proto, {**meta, "quantize": "int8"})
            onnx.save(proto, str(tmp))
            publish(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _card(pipe: OFAPipeline, source: Path | None, quantize: str | None) -> str:
    """The source's model card (or the zoo card's notes) and what the export holds."""
    head = f"# {pipe.name}\n\n{pipe.card.notes if pipe.card else ''}\n"
    if source is not None and (source / CARD_FILE).is_file():
        head = (source / CARD_FILE).read_text()
    import onnxscript

    return (
        f"{head.rstrip()}\n\n## ONNX export\n\n"
        f"Exported from `{pipe.name}` by `ofa export --format onnx` (torch {torch.__version__}, "
        f"dynamo exporter, onnxscript {onnxscript.__version__}, opset {OPSET}); weights "
        f"{quantize or 'fp32'}{' (onnxruntime dynamic int8 of the MatMuls)' if quantize else ''}.\n"
        f"`{ENCODER_FILE}`: images, ids and masks in; encoder states, padding mask, the "
        f"decoder's cross-attention keys/values and position keys out, once per image.\n"
        f"`{DECODER_FILE}`: one decoding step of text rows, the self-attention cache in and "
        f'out, logits out. Run it with `get_model(folder, backend="onnxruntime")`.\n'
    )


def export_onnx(
    model: str | Path | OFAPipeline, out: str | Path, quantize: str | None = None
) -> Path:
    """Export ``model`` (a name / path for :func:`~ofa_vl.api.get_model`, or a torch pipeline)
    to the model folder ``out``; ``quantize="int8"``: dynamic int8 MatMuls. Returns ``out``."""
    if quantize is not None and quantize not in QUANTIZE:
        raise OFAValueError(f"unknown quantization {quantize!r}; choose from {', '.join(QUANTIZE)}")
    pipe = model if isinstance(model, OFAPipeline) else get_model(model)
    if pipe.backend != "torch" or pipe.precision != "fp32":
        raise OFAValueError('export a float32 PyTorch model (precision="fp32", backend="torch")')
    net = pipe.model if pipe.model.device.type == "cpu" else copy.deepcopy(pipe.model).cpu()
    net.eval()  # before the example run: BatchNorm statistics and dropout as in inference
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = GraphNames(net.cfg.decoder_layers)
    meta = {"format": FORMAT, "config": json.dumps(net.cfg.to_dict()), "quantize": ""}
    enc_args, dec_args = _example(net, pipe.task.image_size)
    enc_dyn, dec_dyn = _dynamic_shapes(net.cfg)
    graphs = (
        (EncoderGraph(net), enc_args, enc_dyn, (names.encoder_inputs, names.encoder_outputs), ENCODER_FILE),
        (DecoderStepGraph(net.decoder), dec_args, dec_dyn, (names.decoder_inputs, names.decoder_outputs), DECODER_FILE),
    )  # fmt: skip
    for module, args, dyn, io, file in graphs:
        _export_graph(module, args, dyn, io, {**meta, "graph": file}, out / file)
    if quantize:
        quantize_graphs(out)
    source = model_dir(pipe.card, pipe.name) if pipe.name else None  # a built pipeline: none
    # the source folder's pipeline.json, else the pipeline's; tokenizer.json: the same ids
    (ModelFolder.read(source) or pipe.settings()).write(out, tokenizer=pipe.tokenizer)
    (out / CARD_FILE).write_text(_card(pipe, source, quantize))
    return out


def export(
    model: str | Path | OFAPipeline,
    out: str | Path,
    format: str = "onnx",
    quantize: str | None = None,
) -> Path:
    """``ofa_vl.export``: write ``model`` as a model folder of another runtime's format (ONNX)."""
    if format not in FORMATS:
        raise OFAValueError(f"unknown export format {format!r}; choose from {', '.join(FORMATS)}")
    return export_onnx(model, out, quantize)


__all__ = ["FORMATS", "OPSET", "QUANTIZE", "export", "export_onnx", "quantize_graphs"]
