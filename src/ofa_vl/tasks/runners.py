"""The three ways a task gets its answers, chosen by ``Task.runner``: generate text, score a fixed
candidate set, or sample a grid of image codes. Each takes a :class:`~ofa_vl.tasks.base.BoundTask`
(the task settled for the pipeline's tokenizer, its trie and candidate table built) and a
preprocessed batch, and returns one typed :class:`~ofa_vl.tasks.results.Result` per input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .. import generation as gen
from ..generation.scoring import score_candidates
from .base import BoundTask, Runner, TaskFields
from .image_gen import CodeGeneration
from .results import Result
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
    results = []
    for i, f in enumerate(fields):
        tokens = out.sequences[i].tolist()
        if prompts is not None:  # mmpretrain: the forced prompt is not part of the answer
            tokens = tokens[:1] + tokens[1 + len(prompts[i]) :]
        result = task.parse(tokens, tok, infos[i], f)
        result.score = float(out.scores[i])
        results.append(result)
    return results


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
