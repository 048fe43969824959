"""Training examples for every OFA task, read from the real dataset formats, and their collation.

An :class:`Example` is (image file, prompt, target) as text; :class:`TrainingDataset` decodes and
resizes the image with the inference preprocessing (:func:`ofa_vl.images.preprocess`) and tokenises
in the DataLoader worker, because box tokens depend on the image's resize ratios. Conventions follow
``OFA:data/mm_data/*_dataset.py`` and ``OFA:data/pretrain_data/unify_dataset.py`` (OFA-NOTES 2.1-2.3).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from torch.utils.data import Dataset

from ..errors import OFAValueError
from ..images import ImageInfo, Interpolation
from ..preprocess import PreprocessConfig
from ..tasks import get_task
from ..tasks.region_caption import REGION_PROMPT
from ..tasks.samples import MAX_CAPTION_WORDS, Example, Sample, caption_target, most_common_answer
from ..tokenizer import BOS, EOS, PAD, UNK, OFATokenizer
from .coco_caption import COCOCaption
from .common import require_file
from .refcoco import RefCOCO
from .vqa import VQAv2

TASKS = ("caption", "refcoco", "vqa", "region_caption", "itm")
# Mixed batches: one shuffled pool of every task's examples, so each batch mixes the tasks in
# proportion to their sizes (OFA pretraining batches mix tasks too: OFA:data/pretrain_data/unify_dataset.py).
MIXTURES = {"multitask": TASKS}
IGNORE_INDEX = -100  # label of positions that carry no loss (padding, decoder prompt)


def _examples(task: str, samples: Iterable[Sample]) -> list[Example]:
    """The training examples ``task`` makes of ``samples`` (:meth:`~ofa_vl.tasks.Task.examples`)."""
    made = get_task(task)
    return [e for s in samples for e in made.examples(s)]


def caption_examples(root: Path, split: str = "train") -> list[Example]:
    """``" what does the image describe?"`` -> ``" {caption}"``, one example per caption."""
    return _examples("caption", (s.sample() for s in COCOCaption(root, split, check_images="lazy")))


def refcoco_examples(root: Path, split: str = "train") -> list[Example]:
    """Referring expression -> the 4 bin tokens of its box."""
    refs = RefCOCO(root, "refcoco", split, check_images="lazy")
    return _examples("refcoco", (s.sample() for s in refs))


def vqa_examples(root: Path, split: str = "train2014") -> list[Example]:
    """``" {question}"`` -> ``" {answer}"`` (the most frequent of the human answers)."""
    return _examples("vqa", (s.sample() for s in VQAv2(root, split, check_images="lazy")))


def _extras(root: Path, task: str, split: str) -> list[dict[str, Any]]:
    path = require_file(root / "extras.jsonl", "region captions and image-text pairs (JSON lines)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["task"] == task and r["split"] == split]


def region_caption_examples(root: Path, split: str = "train") -> list[Example]:
    """Grounded captioning: ``REGION_PROMPT`` + the region's 4 bin tokens -> ``" {caption}"``
    (the task's prompt, built with the bins of the image's resize in :class:`TrainingDataset`)."""
    rows = _extras(root, "region_caption", split)
    samples = [
        Sample(i, root / r["image"], {"region": r["box"]}, (r["text"],)) for i, r in enumerate(rows)
    ]
    return _examples("region_caption", samples)


def itm_examples(root: Path, split: str = "train") -> list[Example]:
    """Image-text matching: ``' does the image describe " {text} "?'`` -> ``" yes"`` / ``" no"``,
    the text cleaned as inference cleans it (the task's ``pre_caption``)."""
    rows = _extras(root, "itm", split)
    samples = [
        Sample(i, root / r["image"], {"text": r["text"]}, r["answer"]) for i, r in enumerate(rows)
    ]
    return _examples("itm", samples)


_BUILDERS = {
    "caption": caption_examples,
    "refcoco": refcoco_examples,
    "vqa": vqa_examples,
    "region_caption": region_caption_examples,
    "itm": itm_examples,
}


def load_examples(root: str | Path, task: str) -> list[Example]:
    """The training examples of ``task`` (a name of :data:`TASKS` or ``"multitask"``) under ``root``."""
    names = MIXTURES.get(task, (task,))
    unknown = [n for n in names if n not in _BUILDERS]
    if unknown:
        raise OFAValueError(f"unknown training task {task!r}; choose one of {[*TASKS, *MIXTURES]}")
    return [e for n in names for e in _BUILDERS[n](Path(root))]


def example_texts(examples: Iterable[Example]) -> Iterable[str]:
    """Every prompt and text target (the corpus a word-level vocabulary is built from)."""
    for e in examples:
        yield from (e.prompt, e.target, e.decoder_prompt or "")


def build_word_tokenizer(texts: Iterable[str], num_bins: int = 1000) -> OFATokenizer:
    """A lower-cased word-level vocabulary of ``texts`` (each punctuation mark a word).

    Specials ``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3 as fairseq's ``Dictionary``, a
    ``<s> $A </s>`` post-processor, no code tokens and ``num_bins`` bin tokens.
    """
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    trainer = trainers.WordLevelTrainer(special_tokens=[BOS, PAD, EOS, UNK], min_frequency=1)
    tok.train_from_iterator(texts, trainer)
    return OFATokenizer(tok, num_codes=0, num_bins=num_bins)


class TrainingDataset(Dataset[dict[str, Any]]):
    """Examples -> ``{"image", "input_ids", "decoder_prompt", "target"}`` tensors (one example).

    Args:
        examples: what to train on.
        tokenizer: the model's tokenizer.
        image_size: the model's input side (images are resized to a square).
        interpolation: the inference resize (``pipeline.json``).
        preprocessing: the model's whole image preprocessing (``pipe.task.preprocessing``: size,
            resize, mean / std), the one inference uses; it replaces ``image_size`` and
            ``interpolation``.
        max_source_length: prompts longer than this many tokens are cut (keeping ``</s>``).
        cache_images: keep each resized image in memory after its first use, for a small image set
            read many times (the shapes world: 3 x 128 x 128 uint8, 48 KB an image; each
            DataLoader worker holds its own cache unless :meth:`preload` ran before they fork).
    """

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer: OFATokenizer,
        image_size: int,
        interpolation: Interpolation | str = Interpolation.BILINEAR,
        max_source_length: int = 80,
        cache_images: bool = False,
        preprocessing: PreprocessConfig | None = None,
    ) -> None:
        self.examples = list(examples)
        self.tokenizer = tokenizer
        self.preprocessing = preprocessing or PreprocessConfig(
            image_size, Interpolation.parse(interpolation)
        )
        self.max_source_length = max_source_length
        self._cache: dict[Path, tuple[torch.Tensor, ImageInfo]] | None = (
            {} if cache_images else None
        )

    def preload(self, threads: int | None = None) -> None:
        """Fill the image cache now (before DataLoader workers fork, so they share it).

        Decoding and resizing release the GIL: ``threads`` (default: one per CPU) run in parallel.
        """
        if self._cache is not None:
            todo = [
                p for p in dict.fromkeys(e.image for e in self.examples) if p not in self._cache
            ]
            with ThreadPoolExecutor(threads or os.cpu_count()) as pool:
                list(pool.map(self._image, todo))

    def _image(self, path: Path) -> tuple[torch.Tensor, ImageInfo]:
        """The uint8 resized image (cached or not) and its resize info."""
        if self._cache is None:
            return self.preprocessing.resized(path)
        if path not in self._cache:
            self._cache[path] = self.preprocessing.resized(path)
        return self._cache[path]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex, tok = self.examples[index], self.tokenizer
        pixels, info = self._image(ex.image)
        w_ratio, h_ratio = info.scale_factor
        prompt = ex.prompt
        if ex.region is not None:  # the task's prompt with the bins of this image's resize
            task = get_task(ex.task)
            fields = task.with_image(task.fields_of({"region": list(ex.region)}), info, tok)
            prompt = task.prompt(fields)
        source = tok(prompt, max_length=self.max_source_length, truncation=True)
        if ex.box is not None:
            target = tok.box_to_ids(ex.box, w_ratio, h_ratio)
        else:
            target = tok.encode(ex.target, add_special_tokens=False)
        dprompt = tok.encode(ex.decoder_prompt, False) if ex.decoder_prompt is not None else []
        return {
            "image": self.preprocessing.normalize(pixels),
            "input_ids": source["input_ids"][0],
            "decoder_prompt": torch.tensor(dprompt, dtype=torch.long),
            "target": torch.tensor(target, dtype=torch.long),
        }


def collate(
    items: Sequence[dict[str, Any]], bos_id: int, eos_id: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Pad a list of :class:`TrainingDataset` items into a batch.

    Decoder input = ``<s> + decoder_prompt + target``, labels = ``decoder_prompt + target + </s>``
    with the decoder prompt and padding set to :data:`IGNORE_INDEX` (``OFA:data/ofa_dataset.py``,
    ``prompt_type=prev_output`` in ``OFA:data/mm_data/vqa_gen_dataset.py``).
    """
    sources = [it["input_ids"] for it in items]
    dec, labels = [], []
    for it in items:
        prompt, target = it["decoder_prompt"], it["target"]
        dec.append(torch.cat([torch.tensor([bos_id]), prompt, target]))
        ignored = torch.full_like(prompt, IGNORE_INDEX)
        labels.append(torch.cat([ignored, target, torch.tensor([eos_id])]))
    pad = torch.nn.utils.rnn.pad_sequence
    return {
        "images": torch.stack([it["image"] for it in items]),
        "input_ids": pad(sources, batch_first=True, padding_value=pad_id),
        "decoder_input_ids": pad(dec, batch_first=True, padding_value=pad_id),
        "labels": pad(labels, batch_first=True, padding_value=IGNORE_INDEX),
    }


__all__ = [
    "IGNORE_INDEX",
    "MAX_CAPTION_WORDS",
    "REGION_PROMPT",
    "TASKS",
    "Example",
    "TrainingDataset",
    "build_word_tokenizer",
    "caption_examples",
    "caption_target",
    "collate",
    "example_texts",
    "itm_examples",
    "load_examples",
    "most_common_answer",
    "refcoco_examples",
    "region_caption_examples",
    "vqa_examples",
]
