"""Image-code generation: text-to-image and image infilling (OFA:data/mm_data/image_gen_dataset.py,
OFA:tasks/mm_tasks/image_gen.py, the pretraining ``process_pure_image``).

The decoder samples ``<code_i>`` tokens (``code_masks=True``, tokens restricted to the code range,
top-k 256) on the grid of ``cfg.code_image_size // 8`` codes a side. Turning codes into pixels takes
the VQGAN of OFA's ``image_gen`` release (``vqgan/last.ckpt`` + ``vqgan/model.yaml``, a
taming-transformers ``GumbelVQ``): its decoder is reimplemented in ``model/vqgan.py``, loaded with
``vqgan=<folder>``; without it results hold the code grid only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import OFAValueError
from ..generation import GenerationConfig
from ..images import Interpolation
from ..model.vqgan import VQGANDecoder, codes_to_images, load_vqgan
from ..preprocess import PreprocessConfig
from .base import F, Runner, Task, TaskFields, TextFields, register_task
from .results import CodesResult, Result

if TYPE_CHECKING:
    from PIL import Image

    from ..images import ImageInfo
    from ..tokenizer import OFATokenizer


# ----------------------------------------------------------------------------- tasks
@dataclass
class CodeGeneration(Task[F]):
    """Sample a grid of image codes; decode them to pixels when a VQGAN is given."""

    runner = Runner.CODES
    defaults = PreprocessConfig(256, Interpolation.BICUBIC)  # OFA pretraining: code_image_size * 2
    result_type = CodesResult
    # OFA:run_scripts/image_gen/evaluate_image_gen.sh: sampling, top-k 256, temperature 1
    generation: GenerationConfig = GenerationConfig(
        do_sample=True, top_k=256, no_repeat_ngram_size=0
    )
    num_codes: int | None = None  # default: the full grid, (cfg.code_image_size // 8) ** 2
    vqgan: str | Path | None = None  # folder with vqgan/last.ckpt + model.yaml
    seed: int | None = None
    _vqgan: VQGANDecoder | None = field(default=None, init=False, repr=False)

    def code_count(self, side: int) -> int:
        """Codes to sample per input on a grid ``side`` codes wide."""
        n = side * side if self.num_codes is None else self.num_codes
        if n < 1 or n % side:
            raise OFAValueError(
                f"num_codes must be a positive multiple of the grid side {side}, got {n}"
            )
        return n

    def code_config(
        self, config: GenerationConfig, tokenizer: OFATokenizer, n: int
    ) -> GenerationConfig:
        """``config`` sampling exactly ``n`` code tokens, then ``</s>``."""
        lo = tokenizer.code_offset
        return config.replace(
            max_new_tokens=n + 1,  # OFA: min_len = max_len_b = number of codes, then </s>
            min_new_tokens=n,
            constraint_range=(lo, lo + tokenizer.num_codes),  # --constraint-range=50265,58457
            # the range keeps specials 0-3 (fairseq); <s> <pad> <unk> (id 3) are no image codes
            suppress_tokens=(tokenizer.bos_token_id, tokenizer.pad_token_id, 3),
        )

    def to_grids(self, results: list[Result], side: int, device: torch.device) -> list[Result]:
        """Each result's codes as its (rows, side) grid, and its image when there is a VQGAN."""
        flat = [r.codes[0] for r in results if isinstance(r, CodesResult)]
        grids = torch.tensor(flat).view(len(flat), -1, side)
        images: list[Image.Image | None] = [None] * len(flat)
        if self.vqgan is not None:
            if self._vqgan is None:
                self._vqgan = load_vqgan(self.vqgan).to(device)
            images = list(codes_to_images(grids, self._vqgan))
        for r, grid, img in zip(results, grids, images):
            assert isinstance(r, CodesResult)
            r.codes, r.image = grid.tolist(), img
        return results

    def parse(
        self, tokens: list[int], tokenizer: OFATokenizer, info: ImageInfo, fields: F
    ) -> Result:
        lo, hi = tokenizer.code_offset, tokenizer.code_offset + tokenizer.num_codes
        return CodesResult([[t - lo for t in tokens if lo <= t < hi]])  # one row; see to_grids


@register_task
@dataclass
class ImageGen(CodeGeneration[TextFields]):
    name = "image_gen"
    aliases = ("text_to_image", "text2image")
    Fields = TextFields  # the caption
    text_only = True
    # no image is read: the placeholder is masked out
    defaults = PreprocessConfig(64, Interpolation.BICUBIC)

    def prompt(self, fields: TextFields) -> str:
        # OFA:data/mm_data/image_gen_dataset.py (caption words as given, at most 128)
        caption = " ".join(fields.text.strip().split()[:128])
        return f" what is the complete image? caption: {caption}"


@register_task
@dataclass
class ImageInfill(CodeGeneration[TaskFields]):
    name = "image_infill"
    aliases = ("infill_image",)

    def prompt(self, fields: TaskFields) -> str:
        return " what is the image in the middle part?"  # OFA unify_dataset process_pure_image

    def model_images(self, images: torch.Tensor) -> torch.Tensor:
        """The centre half of each image blanked (normalised value 0)."""
        S = images.shape[-1]
        masked = images.clone()
        masked[..., S // 4 : 3 * S // 4, S // 4 : 3 * S // 4] = 0  # mask_left/top = S / 4
        return masked
