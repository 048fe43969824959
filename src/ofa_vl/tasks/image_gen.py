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
from typing import TYPE_CHECKING, Any

import torch

from ..errors import OFAValueError
from ..model.vqgan import VQGANDecoder, codes_to_images, load_vqgan
from .base import Task, register_task
from .text_tasks import TextOnly

if TYPE_CHECKING:
    from ..images import ImageInfo
    from ..model import OFA
    from ..tokenizer import OFATokenizer


# ----------------------------------------------------------------------------- tasks
@dataclass
class CodeGeneration(Task):
    """Sample a grid of image codes; decode them to pixels when a VQGAN is given."""

    image_size: int = 256  # OFA pretraining: code_image_size * 2
    interpolation: str = "bicubic"
    # OFA:run_scripts/image_gen/evaluate_image_gen.sh: sampling, top-k 256, temperature 1
    generation: dict[str, Any] = field(
        default_factory=lambda: {"do_sample": True, "top_k": 256, "no_repeat_ngram_size": 0}
    )
    num_codes: int | None = None  # default: the full grid, (cfg.code_image_size // 8) ** 2
    vqgan: str | Path | None = None  # folder with vqgan/last.ckpt + model.yaml
    seed: int | None = None
    _vqgan: VQGANDecoder | None = field(default=None, init=False, repr=False)

    def predict(
        self,
        model: OFA,
        tokenizer: OFATokenizer,
        images: torch.Tensor,
        infos: list[ImageInfo],
        fields: list[dict[str, Any]],
        generation: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Generate ``num_codes`` codes per input; results hold the (rows, side) code grid."""
        side = model.cfg.code_image_size // 8
        n = side * side if self.num_codes is None else self.num_codes
        if n < 1 or n % side:
            raise OFAValueError(
                f"num_codes must be a positive multiple of the grid side {side}, got {n}"
            )
        dev = images.device
        lo = tokenizer.code_offset
        gen = {
            **generation,
            "max_new_tokens": n + 1,  # OFA: min_len = max_len_b = number of codes, then </s>
            "min_new_tokens": n,
            "constraint_range": (lo, lo + tokenizer.num_codes),  # --constraint-range=50265,58457
            # the range keeps specials 0-3 (fairseq); <s> <pad> <unk> (id 3) are no image codes
            "bad_words_ids": [tokenizer.bos_token_id, tokenizer.pad_token_id, 3],
            "code_masks": torch.ones(len(fields), dtype=torch.bool, device=dev),
        }
        if self.seed is not None:
            gen["generator"] = torch.Generator(dev).manual_seed(self.seed)
        results = super().predict(model, tokenizer, images, infos, fields, gen)
        grids = torch.tensor([r["codes"] for r in results]).view(len(results), n // side, side)
        for r, grid in zip(results, grids):
            r["codes"] = grid.tolist()
        if self.vqgan is not None:
            if self._vqgan is None:
                self._vqgan = load_vqgan(self.vqgan).to(dev)
            for r, img in zip(results, codes_to_images(grids, self._vqgan)):
                r["image"] = img
        return results

    def parse(self, tokens, tokenizer, info, fields):  # type: ignore[no-untyped-def]
        lo, hi = tokenizer.code_offset, tokenizer.code_offset + tokenizer.num_codes
        return {"codes": [t - lo for t in tokens if lo <= t < hi]}


@register_task
@dataclass
class ImageGen(TextOnly, CodeGeneration):
    name = "image_gen"
    aliases = ("text_to_image", "text2image")
    required = ("text",)
    image_size: int = 64  # no image is read: the placeholder is masked out

    def prompt(self, fields: dict[str, Any]) -> str:
        # OFA:data/mm_data/image_gen_dataset.py (caption words as given, at most 128)
        caption = " ".join(fields["text"].strip().split()[:128])
        return f" what is the complete image? caption: {caption}"


@register_task
@dataclass
class ImageInfill(CodeGeneration):
    name = "image_infill"
    aliases = ("infill_image",)

    def prompt(self, fields: dict[str, Any]) -> str:
        return " what is the image in the middle part?"  # OFA unify_dataset process_pure_image

    def predict(
        self,
        model: OFA,
        tokenizer: OFATokenizer,
        images: torch.Tensor,
        infos: list[ImageInfo],
        fields: list[dict[str, Any]],
        generation: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Blank the centre half of each image (normalised value 0), then generate its codes."""
        S = images.shape[-1]
        masked = images.clone()
        masked[..., S // 4 : 3 * S // 4, S // 4 : 3 * S // 4] = (
            0  # mask_left/top = code_image_size/2
        )
        return super().predict(model, tokenizer, masked, infos, fields, generation)
