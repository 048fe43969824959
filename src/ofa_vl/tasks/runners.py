"""The three ways a task gets its answers, chosen by ``Task.runner``: generate text, score a fixed
candidate set, or sample a grid of image codes. Each takes a :class:`~ofa_vl.tasks.base.BoundTask`
(the task settled for the pipeline's tokenizer, its trie and candidate table built) and a
preprocessed batch, and returns one typed :class:`~ofa_vl.tasks.results.Result` per input.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .. import generation as gen
from ..generation.scoring import score_candidates
from .base import BoundTask, Runner, TaskFields
from .image_gen import CodeGeneration
from .results import Result, TokenLogprob
from .scored import ScoringTask

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..model import OFA

__all__ = ["run"]


def run(
    bound: BoundTask,
    model: OFA,
    images: torch.Tensor,
    infos: list[ImageInfo],
    fields: list[TaskFields],
    config: gen.GenerationConfig,
) -> list[Result]:
    """Preprocessed images (B, 3, S, S), their infos and typed, normalised fields -> results."""
    task = bound.task
    images = task.model_images(images)
    images_mask = None
    if task.text_only:  # OFA's pure-text samples: patch_mask False, the instruction alone
        images_mask = torch.zeros(len(fields), dtype=torch.bool, device=images.device)
    batch = Batch(images, images_mask, infos, fields)
    if task.runner is Runner.SCORE:
        return score(bound, model, batch)
    if task.runner is Runner.CODES:
        return sample_codes(bound, model, batch, config)
    return generate(bound, model, batch, config)


@dataclass(frozen=True)
class Batch:
    """The inputs of one model call."""

    images: torch.Tensor  # (B, 3, S, S), as the encoder reads them
    images_mask: torch.Tensor | None  # (B,) False: no image (text-only tasks)
    infos: list[ImageInfo]  # each image's resize
    fields: list[TaskFields]  # the normalised text fields


def generate(
    bound: BoundTask, model: OFA, batch: Batch, config: gen.GenerationConfig, **inputs: Any
) -> list[Result]:
    """Prompts -> ``generate`` (``inputs``: ``code_masks``, ``generator``) -> ``parse``."""
    task, tok, infos, images = bound.task, bound.tokenizer, batch.infos, batch.images
    fields = [task.with_image(f, info, tok) for f, info in zip(batch.fields, infos)]
    ids = tok([task.prompt(f) for f in fields], return_tensors="pt")["input_ids"]
    dec_texts = [task.decoder_prompt(f) for f in fields]
    prompts = None
    if any(t is not None for t in dec_texts):
        prompts = [tok.encode(t or "", add_special_tokens=False) for t in dec_texts]
    constraints = gen.Constraints(prompts, bound.trie)
    ids = ids.to(images.device)
    out = gen.generate(model, ids, images, batch.images_mask, config, constraints, **inputs)
    n = config.num_return_sequences
    results: list[Result] = []
    for i, f in enumerate(fields):
        skip = 0 if prompts is None else len(prompts[i])
        rows = _distinct(out, range(i * n, (i + 1) * n))
        ranked = [_answer(bound, out, row, skip, infos[i], f, config) for row in rows]
        best = ranked[0]
        if n > 1:  # the n-best list holds the best result too, as its first entry
            best = copy.copy(best)
            best.n_best = ranked
        results.append(best)
    return results


def _distinct(out: gen.GenerateOutput, rows: range) -> list[int]:
    """The rows of one input's n best that are reachable (a finite score) and not a repeat of a
    better one (a beam search over fewer possible answers than beams repeats sequences)."""
    kept: list[int] = []
    seen: set[tuple[int, ...]] = set()
    for row in rows:
        key = tuple(out.sequences[row].tolist())
        if row == rows[0] or (math.isfinite(float(out.scores[row])) and key not in seen):
            kept.append(row)
        seen.add(key)
    return kept


def _answer(
    bound: BoundTask,
    out: gen.GenerateOutput,
    row: int,
    skip: int,
    info: ImageInfo,
    fields: TaskFields,
    config: gen.GenerationConfig,
) -> Result:
    """Row ``row`` of ``generate``'s output (its first ``skip`` tokens a forced prompt) -> the
    task's result with its score, confidence and, with ``output_scores``, token log-probs."""
    task, tok = bound.task, bound.tokenizer
    tokens = out.sequences[row].tolist()
    # mmpretrain: the forced prompt is not part of the answer
    tokens = tokens[:1] + tokens[1 + skip :]
    ends = [j for j, t in enumerate(tokens[1:], 1) if t == tok.eos_token_id]
    answer = tokens[1 : ends[0] + 1 if ends else len(tokens)]
    logprobs = out.token_logprobs[row, skip : skip + len(answer)].tolist()
    result = task.parse(tokens, tok, info, fields)
    result.score = float(out.scores[row])
    result.confidence = task.confidence(logprobs)
    if config.output_scores:
        result.token_logprobs = [
            TokenLogprob(t, tok.decode([t], skip_special_tokens=False), lp)
            for t, lp in zip(answer, logprobs)
        ]
    return task.finish(result)


@torch.inference_mode()
def score(bound: BoundTask, model: OFA, batch: Batch) -> list[Result]:
    """Encode each input once and score every candidate (decoding options do not apply)."""
    task, tok, cands, fields = bound.task, bound.tokenizer, bound.candidates, batch.fields
    assert isinstance(task, ScoringTask) and cands is not None
    ids = tok([task.prompt(f) for f in fields], return_tensors="pt")["input_ids"]
    enc = model.encode(ids.to(batch.images.device), batch.images, batch.images_mask)
    prompts = [task.decoder_tokens(f, tok) for f in fields]
    scores = score_candidates(model, enc, prompts, cands, task.chunk_size).cpu()  # (B, C)
    results = []
    for row, f in zip(scores, fields):
        result = task.report(row, cands.names, f)
        result.score = float(row.max())
        # the best candidate's probability among the candidates (softmax of their log-probs)
        result.confidence = float(row.softmax(0).max())
        result.candidates = {n: float(s) for n, s in zip(cands.names, row)}
        results.append(result)
    return results


def sample_codes(
    bound: BoundTask, model: OFA, batch: Batch, config: gen.GenerationConfig
) -> list[Result]:
    """Sample the task's grid of ``<code_i>`` tokens per input; pixels when it has a VQGAN."""
    task, tok, dev = bound.task, bound.tokenizer, batch.images.device
    assert isinstance(task, CodeGeneration)
    side = model.cfg.code_image_size // 8
    n = task.code_count(side)
    config = task.code_config(config, tok, n)
    code_masks = torch.ones(len(batch.fields), dtype=torch.bool, device=dev)
    generator = None if task.seed is None else torch.Generator(dev).manual_seed(task.seed)
    results = generate(bound, model, batch, config, code_masks=code_masks, generator=generator)
    return task.to_grids(results, side, dev)
