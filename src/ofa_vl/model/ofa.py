"""OFA = encoder + decoder sharing one token embedding, with the output head tied to it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import OFAConfig
from ..generation import Constraints, GenerateOutput, GenerationConfig, Trie, generate
from .decoder import Decoder
from .encoder import Encoder, EncoderOutput


@dataclass
class OFAOutput:
    logits: torch.Tensor  # (B, T, V)
    encoder: EncoderOutput


class OFA(nn.Module):
    """The OFA encoder-decoder (``OFA:models/ofa/unify_transformer.py`` ``TransformerModel``)."""

    def __init__(self, cfg: OFAConfig):
        super().__init__()
        self.cfg = cfg
        self.weights_file: Path | None = None  # the file load_model read the weights from
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.embed_dim, cfg.pad_token_id)
        self.encoder = Encoder(cfg, self.embed_tokens)
        self.decoder = Decoder(cfg, self.embed_tokens)

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @torch.no_grad()
    def init_weights(self, bin_offset: int | None = None, num_bins: int = 0) -> None:
        """Fresh-model init of ``OFA:models/ofa/unify_transformer.py``'s ``Embedding`` helper.

        Token / position embeddings ~ N(0, dim^-0.5) with the padding row zeroed; the relative
        position bias tables (``zero_init=True`` there) start at zero. Location tokens ``<bin_i>``
        start as sinusoids of ``i`` (same scale), so neighbouring bins start alike: boxes are
        learned from far fewer examples.
        """
        for name, module in self.named_modules():
            if isinstance(module, nn.Embedding):
                if "rel_pos_table" in name:
                    nn.init.zeros_(module.weight)
                    continue
                nn.init.normal_(module.weight, 0.0, module.embedding_dim**-0.5)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
        if bin_offset is not None and num_bins > 0:
            dim = self.cfg.embed_dim
            pos = torch.arange(num_bins, dtype=torch.float32)[:, None]
            freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(1e3) / dim))
            table = torch.zeros(num_bins, dim)
            table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
            rows = self.embed_tokens.weight[bin_offset : bin_offset + num_bins]
            rows.copy_(table * dim**-0.5 * 2**0.5)  # unit-variance sinusoids, scaled like the rest

    def num_parameters(self) -> int:
        """Parameters counted once each (the tied embedding once)."""
        return sum(p.numel() for p in self.parameters())

    def encode(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor | None = None,
        images_mask: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """Run the encoder: image patches (if any) then text, ``images_mask[i]=False`` = no image."""
        return self.encoder(input_ids, images, images_mask)

    def set_gradient_checkpointing(self, enabled: bool = True) -> OFA:
        """Activation checkpointing: in training, every encoder and decoder layer keeps only its
        inputs and is recomputed in the backward pass (less memory, about one more forward)."""
        self.encoder.gradient_checkpointing = enabled
        self.decoder.gradient_checkpointing = enabled
        return self

    def forward(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor | None,
        decoder_input_ids: torch.Tensor,
        images_mask: torch.Tensor | None = None,
        code_masks: torch.Tensor | None = None,
        encoder_output: EncoderOutput | None = None,
    ) -> OFAOutput:
        """Teacher-forced logits (B, T, V) for right-padded ``decoder_input_ids`` (pad id 1)."""
        enc = encoder_output or self.encode(input_ids, images, images_mask)
        return OFAOutput(self.decoder(decoder_input_ids, enc, code_masks), enc)

    def generate(
        self,
        input_ids: torch.Tensor,
        images: torch.Tensor | None = None,
        images_mask: torch.Tensor | None = None,
        config: GenerationConfig | None = None,
        *,
        decoder_prompts: list[list[int]] | None = None,
        constraint_trie: Trie | None = None,
        code_masks: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_scores: bool = False,
        **options: Any,
    ) -> GenerateOutput | torch.Tensor:
        """Decode (greedy, beam search or sampling): :func:`ofa_vl.generation.generate` with
        ``options`` (:class:`~ofa_vl.generation.GenerationConfig` names) over ``config``; the
        sequences, or with ``return_scores`` the :class:`~ofa_vl.generation.GenerateOutput`."""
        config = (config or GenerationConfig()).replace(**options)
        constraints = Constraints(decoder_prompts, constraint_trie)
        out = generate(
            self, input_ids, images, images_mask, config, constraints,
            code_masks=code_masks, generator=generator,
        )  # fmt: skip
        return out if return_scores else out.sequences
