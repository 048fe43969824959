"""``generate``: OFA's decoding engine (encoder once per image, KV-cached decoder steps).

Defaults reproduce mmpretrain's generation (HF transformers 4.28 semantics: beam search with
``length_penalty`` 1, ``forced_eos_token_id=2`` at the last step); ``fairseq=True`` switches to
the official OFA generator's stopping and scoring (``max_len_a * src_len + max_len_b``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .config import Constraints, GenerationConfig
from .constraints import (
    PromptAndTrie,
    ban_repeated_ngrams,
    ban_tokens,
    constraint_range_mask,
    force_token,
)
from .search import ProcessFn, ReorderFn, SearchConfig, StepFn, beam_search, greedy_or_sample
from .trie import Trie

if TYPE_CHECKING:
    from ..model import OFA, EncoderOutput

__all__ = ["Constraints", "GenerateOutput", "GenerationConfig", "Trie", "generate"]

# (N, K) token ids -> (N, K) exact logits of the last step (Decoder.refine)
RefineFn = Callable[[torch.Tensor], torch.Tensor]


def refined(num_beams: int) -> int:
    """How many tokens per row get exact logits in a bf16 model's step: 2 x the 2 * num_beams
    the search may keep, at least 32 (issue #30)."""
    return max(32, 4 * num_beams)


@dataclass
class GenerateOutput:
    """What ``generate`` returns; with ``num_return_sequences`` n > 1 each input has n rows, best
    first (HF's layout: input i's k-th sequence is row ``i * n + k``)."""

    sequences: torch.Tensor  # (B * n, L): <s> ... </s>, right-padded with <pad>
    scores: torch.Tensor  # (B * n,): beam score (as HF/fairseq report it) or summed log-prob
    # (B * n, L - 1): each generated token's log-prob (sequences[:, 1:]), 0 on padding: after the
    # constraints and processors, as the search ranked it (HF ``compute_transition_scores``)
    token_logprobs: torch.Tensor


@torch.inference_mode()
def generate(
    model: OFA,
    input_ids: torch.Tensor,
    images: torch.Tensor | None = None,
    images_mask: torch.Tensor | None = None,
    config: GenerationConfig | None = None,
    constraints: Constraints | None = None,
    *,
    code_masks: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> GenerateOutput:
    """Generate decoder sequences for a batch of (image, instruction) inputs.

    ``config`` says how (:class:`GenerationConfig`, defaults when None); ``constraints`` what the
    task forces (decoder prompts, an answer trie); ``code_masks`` (B,) marks rows decoding image
    codes; ``generator`` seeds sampling.
    """
    config = config or GenerationConfig()
    cfg_m = model.cfg
    B = input_ids.shape[0]
    max_new_tokens = config.new_tokens(input_ids.shape[1])
    config.check(cfg_m, source_len=input_ids.shape[1])
    K = 1 if config.do_sample else config.num_beams
    cfg = SearchConfig(
        num_beams=K, max_len=max_new_tokens + 1, length_penalty=config.length_penalty,
        do_sample=config.do_sample, top_k=config.top_k, top_p=config.top_p,
        temperature=config.temperature, fairseq=config.fairseq,
        normalize_scores=config.normalize_scores, pad=cfg_m.pad_token_id, eos=cfg_m.eos_token_id,
        generator=generator,
    )  # fmt: skip
    enc = model.encode(input_ids, images, images_mask)
    dev = enc.last_hidden_state.device
    # the beams' caches must fit the device (bounds from the model and the machine)
    config.check(cfg_m, batch=B, source_len=enc.last_hidden_state.shape[1], device=dev)
    prompt_trie = None
    c = constraints or Constraints()
    if c.decoder_prompts is not None or c.trie is not None:
        prompt_trie = PromptAndTrie(c.decoder_prompts, c.trie, B, K, dev, cfg_m.bos_token_id)

    def shrink(rows: torch.Tensor) -> None:
        """Sentences that are done left the batch (beam search): the prompts follow the rows."""
        if prompt_trie is not None and rows.numel() < prompt_trie.prompt.shape[0]:
            prompt_trie.select(rows)

    step, reorder, refine = _decoder_steps(
        model, enc, K, cfg.max_len, code_masks, config.use_cache, shrink
    )
    process = _processor(config, prompt_trie, cfg, refine)
    bos = torch.full((B,), cfg_m.bos_token_id, dtype=torch.long, device=dev)
    if K > 1:
        return GenerateOutput(
            *beam_search(step, reorder, process, bos, cfg, config.num_return_sequences)
        )
    return GenerateOutput(*greedy_or_sample(step, process, bos, cfg))


def _processor(
    config: GenerationConfig,
    prompt_trie: PromptAndTrie | None,
    cfg: SearchConfig,
    refine: RefineFn | None = None,
) -> ProcessFn:
    """Constraints, then HF's processors in HF's order (no-repeat, min length, forced ``</s>``).

    With ``refine`` (a bf16 model's approximate logits) the ``refined(num_beams)`` best tokens
    the constraints allow are first replaced by their exact logits: the search keeps at most
    ``2 * num_beams`` per sentence, the rest is the margin for the approximation's misranking,
    and the tail enters only the log-sum-exp.
    """

    def constrain(t: int, seqs: torch.Tensor, scores: torch.Tensor) -> None:
        if prompt_trie is not None:
            prompt_trie.mask(t, seqs, scores)
        if config.constraint_range is not None:
            constraint_range_mask(scores, *config.constraint_range)

    def process(t: int, seqs: torch.Tensor, logits: torch.Tensor, normalize: bool) -> torch.Tensor:
        if refine is not None:
            allowed = logits.clone()
            constrain(t, seqs, allowed)
            tokens = allowed.topk(min(refined(cfg.num_beams), logits.shape[-1]), dim=-1).indices
            logits.scatter_(1, tokens, refine(tokens))
        if config.constrain_before_softmax:
            constrain(t, seqs, logits)
        scores = logits.log_softmax(-1) if normalize else logits
        if not config.constrain_before_softmax:
            constrain(t, seqs, scores)
        ban_repeated_ngrams(seqs, scores, config.no_repeat_ngram_size)
        ban_tokens(scores, list(config.suppress_tokens))
        if t < config.min_new_tokens:
            scores[:, cfg.eos] = float("-inf")
        if t == cfg.max_len - 2:
            force_token(scores, cfg.eos)
        return scores

    return process


def _decoder_steps(
    model: OFA,
    enc: EncoderOutput,
    group: int,
    max_len: int,
    code_masks: torch.Tensor | None,
    use_cache: bool,
    on_reorder: Callable[[torch.Tensor], None],
) -> tuple[StepFn, ReorderFn, RefineFn | None]:
    """``step(new tokens) -> logits`` and ``reorder(rows)`` over ``group`` rows per input: the
    KV-cached decoder, or (``use_cache=False``) the whole prefix recomputed every step; and
    ``refine(tokens)``, where the cached step's logits are approximate (a bf16 model)."""
    decoder = model.decoder
    if use_cache:
        state = decoder.init_state(enc, group, max_len, code_masks)

        def reorder_cached(rows: torch.Tensor) -> None:
            state.reorder(rows)
            on_reorder(rows)

        refine = None if decoder.logits_fp32 is None else (lambda t: decoder.refine(state, t))
        return (lambda tokens: decoder.step(tokens, state)), reorder_cached, refine
    B, dev = enc.last_hidden_state.shape[0], enc.last_hidden_state.device
    enc_rows = enc.index_select(torch.arange(B, device=dev).repeat_interleave(group))
    code_rows = None if code_masks is None else code_masks.repeat_interleave(group)
    prefix: list[torch.Tensor] = []

    def step(tokens: torch.Tensor) -> torch.Tensor:
        prefix.append(tokens)
        return model.decoder(torch.cat(prefix, 1), enc_rows, code_rows)

    def reorder(rows: torch.Tensor) -> None:
        nonlocal enc_rows, code_rows
        if rows.numel() < enc_rows.last_hidden_state.shape[0]:
            enc_rows = enc_rows.index_select(rows)
            code_rows = None if code_rows is None else code_rows[rows]
        prefix[:] = [torch.cat(prefix, 1).index_select(0, rows)]
        on_reorder(rows)

    return step, reorder, None
