"""OFA decoder: NormFormer layers with self- and cross-attention, both position-biased.

OFA:models/ofa/unify_transformer.py ``TransformerDecoder``. Rows flagged by ``code_masks`` are
image-code sequences (text-to-image, infilling): they take image position embeddings, the image
position LayerNorm, the code embedding LayerNorm and the image relative-position tables.

Two ways in: :meth:`Decoder.forward` (teacher forcing over whole sequences) and
:meth:`Decoder.init_state` + :meth:`Decoder.step` (incremental decoding with a KV cache). The
position biases of every step are computed once in ``init_state`` from full-prefix positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import OFAConfig
from ..errors import OFAValueError
from .attention import mask_dtype
from .encoder import EncoderOutput, PositionalStack, padding_bias, rel_bias
from .layers import DecoderLayer, KVCache, SlotCache, StreamNorm
from .linear import linear, project
from .positions import code_position_ids, image_buckets, token_buckets
from .resnet import linear_rates


@dataclass
class DecoderState:
    """What incremental decoding keeps between steps (rows = images x group)."""

    cross_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, (B, H, S, D) each
    cross_bias: torch.Tensor  # (B, H, max_len, S): positions + encoder padding
    self_bias: list[torch.Tensor]  # per layer, (1 or B, H, max_len, max_len), causal included
    cache: KVCache  # self-attention keys/values, (B * group, H, max_len, D) per layer
    code_rows: torch.Tensor | None  # (B * group,) True = image-code row
    group: int  # rows per image (beams)
    hidden: torch.Tensor | None = None  # (N, C) last step's logits input, for Decoder.refine

    @property
    def length(self) -> int:
        return self.cache.length

    def reorder(self, index: torch.Tensor) -> None:
        """Rows ``index`` survive (beam search); each must stay within its image's group. Whole
        groups may leave (their sentences are done): their images' states go with them."""
        if index.numel() < self.cache.k[0].shape[0]:
            images = index.view(-1, self.group)[:, 0] // self.group  # (B',) images kept
            self.cross_kv = [(k[images], v[images]) for k, v in self.cross_kv]
            self.cross_bias = self.cross_bias[images]
            self.self_bias = [b[images] if b.shape[0] > 1 else b for b in self.self_bias]
        self.cache.reorder(index)
        if self.code_rows is not None:
            self.code_rows = self.code_rows.index_select(0, index)


class Decoder(PositionalStack):
    # Decoder.one_step through torch.compile, set by ofa_vl.model.compile.compile_decoder
    compiled_step: Callable[..., torch.Tensor] | None = None
    logits_fp32: torch.Tensor | None  # a buffer, registered in __init__

    def __init__(self, cfg: OFAConfig, embed_tokens: nn.Embedding):
        super().__init__()
        dim = cfg.embed_dim
        self.cfg = cfg
        self.embed_tokens = embed_tokens
        self.embedding_ln = StreamNorm(dim, into_stream=True)
        self.code_embedding_ln = StreamNorm(dim, into_stream=True)
        self._init_positions(cfg)
        self.self_pos_q_linear = nn.Linear(dim, dim)
        self.self_pos_k_linear = nn.Linear(dim, dim)
        self.cross_pos_q_linear = nn.Linear(dim, dim)
        self.cross_pos_k_linear = nn.Linear(dim, dim)
        rates = linear_rates(cfg.decoder_drop_path_rate, cfg.decoder_layers)
        self._init_layers(cfg, [DecoderLayer(cfg, r) for r in rates], logits=True)
        self.output_projection = nn.Linear(dim, cfg.vocab_size, bias=False)
        self.output_projection.weight = embed_tokens.weight  # tied, as in every OFA release
        # (V, C) fp32 copy of a bf16/fp16 output projection (precision.cast_weights): the exact
        # logits of teacher forcing and of each step's candidates (refine)
        self.register_buffer("logits_fp32", None, persistent=False)

    # ----------------------------------------------------------------- positions
    def _raw_positions(self, T: int, code: bool, device: torch.device) -> torch.Tensor:
        """(T, C) position embeddings of a text or an image-code sequence, before their LN."""
        if code:
            ids = code_position_ids(self.cfg.code_image_size, self.cfg.image_bucket_size, T)
            return self.embed_image_positions(ids.to(device))
        return self.embed_positions(torch.arange(T, device=device))

    def _positions(self, T: int, code: bool, device: torch.device) -> torch.Tensor:
        """(1, T, C) normalised position embeddings of a text or an image-code sequence."""
        ln = self.image_pos_ln if code else self.pos_ln
        return ln(self._raw_positions(T, code, device))[None]

    def _rel_buckets(self, T: int, code: bool, device: torch.device) -> torch.Tensor:
        if code:
            ids = code_position_ids(self.cfg.code_image_size, self.cfg.image_bucket_size, T)
            return image_buckets(ids, ids, self.cfg.image_bucket_size).to(device)
        pos = torch.arange(T, device=device)
        return token_buckets(self.token_bucket, pos, pos, self.cfg.max_positions)

    def _biases(
        self, T: int, enc: EncoderOutput, code_masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Cross bias (B, H, T, S) and per-layer self bias (1 or B, H, T, T) with causal mask."""
        device = enc.last_hidden_state.device
        modes = [False] if code_masks is None or not code_masks.any() else [False, True]
        enc_k = self._heads(self.cross_pos_k_linear(enc.position_embedding))  # (B, H, S, D)
        dtype = mask_dtype(enc_k.dtype, device)
        enc_k = enc_k.to(dtype)
        causal = torch.full((T, T), float("-inf"), device=device).triu(1)
        cross, selfs = [], []
        for code in modes:
            pos = self._positions(T, code, device)
            q = self._heads(self.self_pos_q_linear(pos)).to(dtype) * self.pos_scaling
            abs_self = q @ self._heads(self.self_pos_k_linear(pos)).to(dtype).transpose(2, 3)
            q = self._heads(self.cross_pos_q_linear(pos)).to(dtype) * self.pos_scaling
            cross.append(q @ enc_k.transpose(2, 3))
            tables = self.image_rel_pos_table_list if code else self.token_rel_pos_table_list
            buckets = self._rel_buckets(T, code, device)
            selfs.append([abs_self + rel_bias(t, buckets) + causal for t in tables])
        enc_pad = padding_bias(enc.padding_mask, dtype)
        if len(modes) == 1:
            return cross[0] + enc_pad, selfs[0]
        assert code_masks is not None
        m = code_masks.to(device)[:, None, None, None]
        cross_bias = torch.where(m, cross[1], cross[0]) + enc_pad
        return cross_bias, [torch.where(m, c, t) for t, c in zip(selfs[0], selfs[1])]

    def _embed(
        self, tokens: torch.Tensor, code_rows: torch.Tensor | None, start: int = 0
    ) -> torch.Tensor:
        """Embed (N, T') tokens at positions ``start..start+T'-1``."""
        x = self.embed_tokens(tokens)
        rows = code_rows if code_rows is not None and code_rows.any() else None
        if self.cfg.entangle_position_embedding:
            end = start + tokens.shape[1]
            pos = self._raw_positions(end, False, x.device)[start:]
            if rows is not None:
                image_pos = self._raw_positions(end, True, x.device)[start:]
                pos = torch.where(rows[:, None, None], image_pos, pos)
            x = x + pos
        out = self.embedding_ln(x)
        if rows is not None:
            out = torch.where(rows[:, None, None], self.code_embedding_ln(x), out)
        return nn.functional.dropout(out, self.cfg.dropout, self.training)

    def _run_layers(
        self,
        x: torch.Tensor,
        self_bias: list[torch.Tensor],
        cross_kv: list[tuple[torch.Tensor, torch.Tensor]],
        cross_bias: torch.Tensor,
        cache: KVCache | SlotCache | None = None,
    ) -> torch.Tensor:
        """The layers, then the final LayerNorm: (N, T, C) inputs of the logits."""
        for i, layer in enumerate(self.layers):
            if cache is None:  # teacher forcing: may be checkpointed
                x = self._layer(layer, x, self_bias[i], cross_kv[i], cross_bias)
            else:
                x = layer(x, self_bias[i], cross_kv[i], cross_bias, cache, i)
        return self.final_ln(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) states -> (..., V) logits of the tied output projection (exact: fp32 in a
        bf16 model)."""
        table = self.logits_fp32
        return project(self, x, self.output_projection.weight if table is None else table)

    def _step_logits(self, x: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """A step's (N, T', V) logits. In a bf16 or int8 model they come from a bf16 or int8
        table, a half or a quarter of the fp32 one's bytes (the batch-1 step reads its weights
        once: issue #30); the search then asks :meth:`refine` for the exact logits of the
        candidates it may keep."""
        if self.logits_fp32 is None:
            return self.project(x)
        state.hidden = x[:, -1]
        weight = self.output_projection.weight  # an int8 module's is a method: it takes fp32
        dtype = weight.dtype if isinstance(weight, torch.Tensor) else torch.float32
        return linear(self.output_projection, x.to(dtype), any_rows=True).float()

    def refine(self, state: DecoderState, tokens: torch.Tensor) -> torch.Tensor:
        """(N, K) token ids -> (N, K) exact fp32 logits of the last step at those ids."""
        assert self.logits_fp32 is not None and state.hidden is not None
        rows = self.logits_fp32[tokens]  # (N, K, C)
        return (rows @ state.hidden[:, :, None]).squeeze(-1)

    def cross_kv(self, enc: EncoderOutput) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cross-attention keys/values of every layer, computed once per image."""
        layers: list[DecoderLayer] = list(self.layers)  # type: ignore[arg-type]
        return [layer.cross_attn.project_kv(enc.last_hidden_state) for layer in layers]

    # ----------------------------------------------------------------- teacher forcing
    def forward(
        self,
        input_ids: torch.Tensor,
        enc: EncoderOutput,
        code_masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) right-padded decoder inputs -> (B, T, V) logits; pad keys are masked."""
        B, T = input_ids.shape
        if self.cfg.max_positions < T:
            raise OFAValueError(f"decoder input has {T} tokens; at most {self.cfg.max_positions}")
        cross_bias, self_bias = self._biases(T, enc, code_masks)
        pad = input_ids.eq(self.cfg.pad_token_id)
        if pad.any():
            key_pad = padding_bias(pad, cross_bias.dtype)
            self_bias = [b + key_pad for b in self_bias]
        x = self._embed(input_ids, code_masks)
        return self.project(self._run_layers(x, self_bias, self.cross_kv(enc), cross_bias))

    # ----------------------------------------------------------------- incremental
    def init_state(
        self,
        enc: EncoderOutput,
        group: int,
        max_len: int,
        code_masks: torch.Tensor | None = None,
    ) -> DecoderState:
        """Prepare decoding of ``group`` rows per image for up to ``max_len`` tokens."""
        if max_len > self.cfg.max_positions:
            raise OFAValueError(f"cannot decode {max_len} tokens; at most {self.cfg.max_positions}")
        B = enc.last_hidden_state.shape[0]
        cross_bias, self_bias = self._biases(max_len, enc, code_masks)
        like = enc.last_hidden_state
        shape = (B * group, self.cfg.num_heads, max_len, self.cfg.head_dim)
        code_rows = None
        if code_masks is not None and code_masks.any():
            code_rows = code_masks.to(like.device).repeat_interleave(group)
        return DecoderState(
            cross_kv=self.cross_kv(enc),
            cross_bias=cross_bias,
            self_bias=self_bias,
            cache=KVCache(len(self.layers), shape, like),
            code_rows=code_rows,
            group=group,
        )

    def step(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """Feed (N, T') new tokens of every row; return (N, T', V) logits, cache advanced."""
        N, Tn = tokens.shape
        t0, G = state.length, state.group
        if self.compiled_step is not None and Tn == 1 and state.code_rows is None:
            pos = torch.full((1,), t0, dtype=torch.long, device=tokens.device)
            c = state.cache
            x = self.compiled_step(
                self, tokens, pos, c.k, c.v, state.self_bias, state.cross_kv, state.cross_bias
            )
            c.advance(1)
            return self._step_logits(x, state)
        sb = [b[:, :, t0 : t0 + Tn, : t0 + Tn] for b in state.self_bias]
        if sb[0].shape[0] > 1:  # per-image biases (code rows) -> per row
            sb = [b.repeat_interleave(G, 0) for b in sb]
        cb = state.cross_bias[:, :, t0 : t0 + Tn]  # (B, H, T', S), viewed as (B, G*T') queries
        if Tn > 1 and G > 1:
            cb = cb.repeat(1, 1, G, 1)
        x = self._embed(tokens, state.code_rows, t0)
        x = self._run_layers(x, sb, state.cross_kv, cb, state.cache)
        state.cache.advance(Tn)
        return self._step_logits(x, state)

    def one_step(
        self,
        tokens: torch.Tensor,
        pos: torch.Tensor,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        self_bias: list[torch.Tensor],
        cross_kv: list[tuple[torch.Tensor, torch.Tensor]],
        cross_bias: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`step` for one (N, 1) token per text row at position ``pos`` (a (1,) tensor),
        with every shape fixed by the state (``max_len`` keys), not by the step: what
        ``torch.compile`` traces once (``compile_decoder``). Returns the (N, 1, C) inputs of
        the logits (projected outside the graph, by ``step``); the caller advances the cache. The same numbers as :meth:`step` up to summation order."""
        sb = [b.index_select(2, pos) for b in self_bias]  # (1, H, 1, max_len), causal masked
        cb = cross_bias.index_select(2, pos)  # (B, H, 1, S)
        x = self.embed_tokens(tokens)  # (N, 1, C)
        if self.cfg.entangle_position_embedding:
            x = x + self.embed_positions(pos)
        x = nn.functional.dropout(self.embedding_ln(x), self.cfg.dropout, self.training)
        return self._run_layers(x, sb, cross_kv, cb, SlotCache(keys, values, pos))
