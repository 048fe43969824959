"""``generate``: OFA's decoding engine (encoder once per image, KV-cached decoder steps).

Defaults reproduce mmpretrain's generation (HF transformers 4.28 semantics: beam search with
``length_penalty`` 1, ``forced_eos_token_id=2`` at the last step); ``fairseq=True`` switches to
the official OFA generator's stopping and scoring (``max_len_a * src_len + max_len_b``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..options import check_decoding
from .constraints import (
    PromptAndTrie,
    ban_repeated_ngrams,
    ban_tokens,
    constraint_range_mask,
    force_token,
)
from .search import SearchConfig, beam_search, greedy_or_sample
from .trie import Trie

if TYPE_CHECKING:
    from ..model import OFA

__all__ = ["GenerateOutput", "Trie", "generate"]


@dataclass
class GenerateOutput:
    sequences: torch.Tensor  # (B, L): <s> ... </s>, right-padded with <pad>
    scores: torch.Tensor  # (B,): beam score (as HF/fairseq report it) or summed log-prob


@torch.inference_mode()
def generate(
    model: OFA,
    input_ids: torch.Tensor,
    images: torch.Tensor | None = None,
    images_mask: torch.Tensor | None = None,
    *,
    num_beams: int = 5,
    max_new_tokens: int = 20,
    min_new_tokens: int = 0,
    no_repeat_ngram_size: int = 3,
    length_penalty: float = 1.0,
    decoder_prompts: list[list[int]] | None = None,
    constraint_trie: Trie | None = None,
    constraint_range: tuple[int, int] | None = None,
    bad_words_ids: list[int] | None = None,
    constrain_before_softmax: bool = True,
    do_sample: bool = False,
    top_k: int = 50,
    top_p: float = 1.0,
    temperature: float = 1.0,
    code_masks: torch.Tensor | None = None,
    fairseq: bool = False,
    max_len_a: float = 0.0,
    max_len_b: int | None = None,
    normalize_scores: bool = True,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    return_scores: bool = False,
) -> GenerateOutput | torch.Tensor:
    """Generate decoder sequences for a batch of (image, instruction) inputs.

    ``constrain_before_softmax`` True masks logits before ``log_softmax`` (OFA fine-tuned mode,
    mmpretrain); False masks log-probs after it (OFA ``--zero-shot``). With ``fairseq=True`` and
    ``max_len_b`` the limit is ``int(max_len_a * src_len + max_len_b)`` new tokens, then ``</s>``.
    """
    cfg_m = model.cfg
    B = input_ids.shape[0]
    if fairseq and max_len_b is not None:
        # OFA:models/sequence_generator.py: max_len tokens, then one extra step for </s>
        max_new_tokens = int(max_len_a * input_ids.shape[1] + max_len_b) + 1
    options = {
        "num_beams": num_beams, "max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens,
        "no_repeat_ngram_size": no_repeat_ngram_size, "do_sample": do_sample, "top_k": top_k,
        "top_p": top_p, "temperature": temperature,
    }  # fmt: skip
    check_decoding(options, cfg_m)
    K = 1 if do_sample else num_beams
    cfg = SearchConfig(
        num_beams=K,
        max_len=max_new_tokens + 1,
        length_penalty=length_penalty,
        do_sample=do_sample,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        fairseq=fairseq,
        normalize_scores=normalize_scores,
        pad=cfg_m.pad_token_id,
        eos=cfg_m.eos_token_id,
        generator=generator,
    )
    enc = model.encode(input_ids, images, images_mask)
    dev = enc.last_hidden_state.device
    # the beams' caches must fit the device (bounds from the model and the machine)
    check_decoding(options, cfg_m, batch=B, source_len=enc.last_hidden_state.shape[1], device=dev)
    group = K
    prompt_trie = None
    if decoder_prompts is not None or constraint_trie is not None:
        prompt_trie = PromptAndTrie(
            decoder_prompts, constraint_trie, B, group, dev, cfg_m.bos_token_id
        )

    def constrain(t: int, seqs: torch.Tensor, scores: torch.Tensor) -> None:
        if prompt_trie is not None:
            prompt_trie.mask(t, seqs, scores)
        if constraint_range is not None:
            constraint_range_mask(scores, *constraint_range)

    def process(t: int, seqs: torch.Tensor, logits: torch.Tensor, normalize: bool) -> torch.Tensor:
        # constraints, then HF's processors in HF's order (no-repeat, min length, forced </s>)
        if constrain_before_softmax:
            constrain(t, seqs, logits)
        scores = logits.log_softmax(-1) if normalize else logits
        if not constrain_before_softmax:
            constrain(t, seqs, scores)
        ban_repeated_ngrams(seqs, scores, no_repeat_ngram_size)
        ban_tokens(scores, bad_words_ids or [])
        if t < min_new_tokens:
            scores[:, cfg.eos] = float("-inf")
        if t == cfg.max_len - 2:
            force_token(scores, cfg.eos)
        return scores

    if use_cache:
        state = model.decoder.init_state(enc, group, cfg.max_len, code_masks)

        def step(tokens: torch.Tensor) -> torch.Tensor:
            return model.decoder.step(tokens, state)

        def reorder(rows: torch.Tensor) -> None:
            state.reorder(rows)
            shrink(rows)
    else:  # the naive path: recompute the whole prefix every step (reference / benchmark)
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
            shrink(rows)

    def shrink(rows: torch.Tensor) -> None:
        """Sentences that are done left the batch (beam search): the prompts follow the rows."""
        if prompt_trie is not None and rows.numel() < prompt_trie.prompt.shape[0]:
            prompt_trie.select(rows)

    bos = torch.full((B,), cfg_m.bos_token_id, dtype=torch.long, device=dev)
    if K > 1:
        seqs, scores = beam_search(step, reorder, process, bos, cfg)
    else:
        seqs, scores = greedy_or_sample(step, process, bos, cfg)
    return GenerateOutput(seqs, scores) if return_scores else seqs
