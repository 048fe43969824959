"""The three ways a task gets its answers, chosen by ``Task.runner``: generate text, score a fixed
candidate set, or sample a grid of image codes. Each takes a :class:`~ofa_vl.tasks.base.BoundTask`
(the task settled for the pipeline's tokenizer, its trie and candidate table built) and a
preprocessed batch of :class:`Prepared` queries (each tokenized once, by :func:`prepare`), and
returns one typed :class:`~ofa_vl.tasks.results.Result` per input.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .. import generation as gen
from ..generation.scoring import score_candidates
from ..options import check_source_length
from .base import BoundTask, Runner, TaskFields
from .image_gen import CodeGeneration
from .results import Result, TokenLogprob
from .scored import ScoringTask

if TYPE_CHECKING:
    from ..config import OFAConfig
    from ..images import ImageInfo
    from ..model import OFA

__all__ = ["Prepared", "prepare", "run"]


@dataclass(frozen=True)
class Prepared:
    """One query ready for its runner: its normalised fields placed on its image, its encoder
    instruction (and forced decoder prompt) tokenized once, its length checked."""

    info: ImageInfo  # its image's resize
    fields: TaskFields  # normalised, then ``Task.with_image``
    input_ids: list[int]  # <s> instruction </s>
    decoder_ids: list[int] | None  # tokens forced after <s> (no specials); None: none


def prepare(bound: BoundTask, fields: TaskFields, info: ImageInfo, cfg: OFAConfig) -> Prepared:
    """Normalised ``fields`` of an image resized as ``info`` -> the :class:`Prepared` query; an
    instruction longer than the model's positions is one :class:`~ofa_vl.errors.OFAValueError`."""
    task, tok = bound.task, bound.tokenizer
    placed = task.with_image(fields, info, tok)
    ids = tok.encode(task.prompt(placed))
    check_source_length(len(ids), cfg)
    dec = task.decoder_prompt(placed)
    return Prepared(info, placed, ids, None if dec is None else tok.encode(dec, False))


def run(
    bound: BoundTask,
    model: OFA,
    images: torch.Tensor,
    items: list[Prepared],
    config: gen.GenerationConfig,
) -> list[Result]:
    """Preprocessed images (B, 3, S, S) and their prepared queries -> results."""
    task = bound.task
    images = task.model_images(images)
    images_mask = None
    if task.text_only:  # OFA's pure-text samples: patch_mask False, the instruction alone
        images_mask = torch.zeros(len(items), dtype=torch.bool, device=images.device)
    batch = Batch(images, images_mask, items)
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
    items: list[Prepared]  # each input's fields, resize and tokens

    def input_ids(self, pad: int) -> torch.Tensor:
        """(B, L) the instructions, right-padded with ``pad`` (as ``OFATokenizer.__call__``)."""
        width = max(len(it.input_ids) for it in self.items)
        rows = [it.input_ids + [pad] * (width - len(it.input_ids)) for it in self.items]
        return torch.tensor(rows, dtype=torch.long, device=self.images.device)


def generate(
    bound: BoundTask, model: OFA, batch: Batch, config: gen.GenerationConfig, **inputs: Any
) -> list[Result]:
    """Prompts -> ``generate`` (``inputs``: ``code_masks``, ``generator``) -> ``parse``."""
    tok, images, items = bound.tokenizer, batch.images, batch.items
    ids = batch.input_ids(tok.pad_token_id)
    prompts = None
    if any(it.decoder_ids is not None for it in items):
        prompts = [it.decoder_ids or [] for it in items]
    constraints = gen.Constraints(prompts, bound.trie)
    out = gen.generate(model, ids, images, batch.images_mask, config, constraints, **inputs)
    n = config.num_return_sequences
    results: list[Result] = []
    for i, it in enumerate(items):
        skip = 0 if prompts is None else len(prompts[i])
        rows = _distinct(out, range(i * n, (i + 1) * n))
        ranked = [_answer(bound, out, row, skip, it.info, it.fields, config) for row in rows]
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
    task, tok, cands = bound.task, bound.tokenizer, bound.candidates
    fields = [it.fields for it in batch.items]
    assert isinstance(task, ScoringTask) and cands is not None
    enc = model.encode(batch.input_ids(tok.pad_token_id), batch.images, batch.images_mask)
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
    code_masks = torch.ones(len(batch.items), dtype=torch.bool, device=dev)
    generator = None if task.seed is None else torch.Generator(dev).manual_seed(task.seed)
    results = generate(bound, model, batch, config, code_masks=code_masks, generator=generator)
    return task.to_grids(results, side, dev)
