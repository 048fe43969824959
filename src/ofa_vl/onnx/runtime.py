"""``backend="onnxruntime"``: an exported folder's graphs behind the part of :class:`OFA` that
decoding calls (``cfg``, ``encode``, ``decoder.init_state`` / ``step`` / teacher-forced call).

So ``generation/`` (beam search, tries, prompt and n-gram constraints, sentences leaving the
batch) and the task runners drive ONNX Runtime exactly as they drive PyTorch: one search
engine. Tensors stay torch tensors on the host; each graph call hands them over as numpy arrays
(no copy on CPU) and gets numpy arrays back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import OFAConfig
from ..errors import OFAFileNotFoundError, OFAValueError
from ..model.encoder import EncoderOutput
from .graphs import DECODER_FILE, ENCODER_FILE, FORMAT, GraphNames


@dataclass
class OnnxEncoding(EncoderOutput):
    """The encoder graph's outputs: :class:`EncoderOutput` plus what the decoder reads per image."""

    cross_pos_k: torch.Tensor  # (B, H, S, D): image side of the cross-attention position bias
    cross: list[torch.Tensor]  # k0, v0, k1, ...: each decoder layer's (B, H, S, D)

    def index_select(self, index: torch.Tensor) -> OnnxEncoding:
        pick = lambda t: t.index_select(0, index)  # noqa: E731
        return OnnxEncoding(
            pick(self.last_hidden_state), pick(self.padding_mask), pick(self.position_embedding),
            pick(self.cross_pos_k), [pick(t) for t in self.cross],
        )  # fmt: skip


@dataclass
class OnnxDecoderState:
    """:class:`~ofa_vl.model.decoder.DecoderState` of the step graph: the images' encodings and
    the self-attention cache, grown by each step (rows = images x group)."""

    enc: OnnxEncoding
    past: list[torch.Tensor]  # k0, v0, ...: (B * group, H, length, D)
    group: int

    @property
    def length(self) -> int:
        return self.past[0].shape[2]

    def reorder(self, index: torch.Tensor) -> None:
        """As ``DecoderState.reorder``: rows ``index`` survive, whole groups may leave."""
        if index.numel() < self.past[0].shape[0]:
            self.enc = self.enc.index_select(index.view(-1, self.group)[:, 0] // self.group)
        self.past = [p.index_select(0, index) for p in self.past]


def _run(session: Any, names: list[str], tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    feeds = {n: t.contiguous().numpy() for n, t in zip(names, tensors)}
    return [torch.from_numpy(np.asarray(a)) for a in session.run(None, feeds)]


class OnnxDecoder:
    """``decoder.onnx`` with :class:`~ofa_vl.model.decoder.Decoder`'s decoding interface."""

    logits_fp32 = None  # its logits are exact (fp32 or int8 graphs): nothing to refine

    def __init__(self, session: Any, cfg: OFAConfig):
        self.session, self.cfg = session, cfg
        self.names = GraphNames(cfg.decoder_layers)

    def init_state(
        self, enc: OnnxEncoding, group: int, max_len: int, code_masks: torch.Tensor | None = None
    ) -> OnnxDecoderState:
        if max_len > self.cfg.max_positions:
            raise OFAValueError(f"cannot decode {max_len} tokens; at most {self.cfg.max_positions}")
        if code_masks is not None and bool(code_masks.any()):
            raise OFAValueError("image-code generation is not in the ONNX graphs; use PyTorch")
        N, cfg = enc.last_hidden_state.shape[0] * group, self.cfg
        empty = torch.zeros(N, cfg.num_heads, 0, cfg.head_dim)
        return OnnxDecoderState(enc, [empty] * (2 * cfg.decoder_layers), group)

    def step(self, tokens: torch.Tensor, state: OnnxDecoderState) -> torch.Tensor:
        """Feed (N, T') new tokens of every row; return (N, T', V) logits, cache grown."""
        e = state.enc
        inputs = [tokens, e.padding_mask, e.cross_pos_k, *e.cross, *state.past]
        logits, *state.past = _run(self.session, self.names.decoder_inputs, inputs)
        return logits

    def __call__(
        self, input_ids: torch.Tensor, enc: OnnxEncoding, code_masks: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher forcing as one step from an empty cache: (B, T) -> (B, T, V) logits. Causal:
        a right-padded row's logits before its first pad equal ``Decoder.forward``'s; at the pad
        positions (which candidate scoring never reads) they differ."""
        return self.step(input_ids, self.init_state(enc, 1, input_ids.shape[1], code_masks))


class OnnxOFA:
    """An exported OFA run by ONNX Runtime: ``cfg``, ``encode`` and ``decoder`` as in :class:`OFA`."""

    def __init__(self, folder: Path, device: str | torch.device | None = None):
        encoder = _session(folder / ENCODER_FILE, device)
        meta = encoder.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise OFAValueError(f"{folder / ENCODER_FILE}: not an ofa-vl ONNX export")
        self.cfg = OFAConfig.from_dict(json.loads(meta["config"]))
        self.precision = meta.get("quantize") or "fp32"
        self.encoder = encoder
        self.decoder = OnnxDecoder(_session(folder / DECODER_FILE, device), self.cfg)
        self.weights_file: Path | None = folder / DECODER_FILE  # the token embeddings' graph
        self.device = torch.device("cpu")  # host tensors; a CUDA provider copies them over
        self.names = GraphNames(self.cfg.decoder_layers)

    def encode(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor | None = None,
        images_mask: torch.Tensor | None = None,
    ) -> OnnxEncoding:
        """As :meth:`OFA.encode`; the graph always reads images (``images_mask`` False: none)."""
        if images is None:
            raise OFAValueError(
                "the ONNX encoder reads images: pass them (images_mask False = none)"
            )
        if images.shape[-1] != images.shape[-2]:
            raise OFAValueError(f"the ONNX encoder reads square images, got {tuple(images.shape)}")
        mask = torch.ones(images.shape[0], dtype=torch.bool) if images_mask is None else images_mask
        h, pad, pos, pos_k, *cross = _run(
            self.encoder, self.names.encoder_inputs, [input_ids, images.float(), mask.bool()]
        )
        return OnnxEncoding(h, pad, pos, pos_k, cross)


def _session(path: Path, device: str | torch.device | None) -> Any:
    """An InferenceSession on torch's thread count; ``device`` cuda: the CUDA provider."""
    import onnxruntime as ort

    if not path.is_file():
        raise OFAFileNotFoundError(f"{path}: no such file (export with `ofa export --format onnx`)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    dev = torch.device(device or "cpu")
    if dev.type == "cpu":
        providers: list[Any] = ["CPUExecutionProvider"]
    elif dev.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers = [("CUDAExecutionProvider", {"device_id": dev.index or 0})]
    else:
        raise OFAValueError(
            f"this onnxruntime cannot run on {dev} (providers: "
            f"{', '.join(ort.get_available_providers())}; CUDA needs onnxruntime-gpu)"
        )
    return ort.InferenceSession(str(path), options, providers=providers)


def load_onnx_model(path: str | Path, device: str | torch.device | None = None) -> OnnxOFA:
    """An ``ofa export --format onnx`` folder (or a file in it) for ONNX Runtime."""
    folder = Path(path)
    folder = folder if folder.is_dir() or not folder.exists() else folder.parent
    return OnnxOFA(folder, device)


__all__ = ["OnnxDecoder", "OnnxDecoderState", "OnnxEncoding", "OnnxOFA", "load_onnx_model"]
