"""The VQGAN decoder of OFA's ``image_gen`` release: image codes -> pixels.

A taming-transformers ``GumbelVQ`` (``vqgan/last.ckpt`` + ``vqgan/model.yaml``); only its decoder
is reimplemented, used by the text-to-image and infilling tasks (``tasks/image_gen.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import OFAFileNotFoundError
from ..unpickle import safe_torch_load

VQGAN_FILES = ("last.ckpt", "model.yaml")


# taming-transformers taming/modules/diffusionmodules/model.py (Decoder, ResnetBlock, AttnBlock,
# Upsample) with the same module names, so the checkpoint's state dict loads as it is.
def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class _ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class _AttnBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(B, C, H * W) for m in (self.q, self.k, self.v))
        w = (q.transpose(1, 2) @ k * C**-0.5).softmax(-1)  # (B, HW, HW)
        return x + self.proj_out((v @ w.transpose(1, 2)).reshape(B, C, H, W))


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution of the decoder: resnet blocks (each with attention at some sizes), upsample."""

    def __init__(self, cin: int, cout: int, blocks: int, attend: bool, upsample: bool):
        super().__init__()
        self.block = nn.ModuleList(
            _ResnetBlock(cin if j == 0 else cout, cout) for j in range(blocks)
        )
        self.attn = nn.ModuleList(_AttnBlock(cout) for _ in range(blocks if attend else 0))
        self.upsample = _Upsample(cout) if upsample else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h if self.upsample is None else self.upsample(h)


class _Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = _ResnetBlock(channels, channels)
        self.attn_1 = _AttnBlock(channels)
        self.block_2 = _ResnetBlock(channels, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class _Decoder(nn.Module):
    """taming ``Decoder`` (``temb_ch=0``, ``give_pre_end=False``)."""

    def __init__(
        self,
        ch: int,
        out_ch: int,
        ch_mult: list[int],
        num_res_blocks: int,
        attn_resolutions: list[int],
        resolution: int,
        z_channels: int,
    ):
        super().__init__()
        block_in = ch * ch_mult[-1]
        res = resolution // 2 ** (len(ch_mult) - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = _Mid(block_in)
        levels: list[_Level] = []
        for i in reversed(range(len(ch_mult))):  # lowest resolution first, stored first-to-last
            attend = res in attn_resolutions
            levels.insert(0, _Level(block_in, ch * ch_mult[i], num_res_blocks + 1, attend, i != 0))
            block_in = ch * ch_mult[i]
            res = res * 2 if i != 0 else res
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_ch, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


class _Codebook(nn.Module):
    """taming ``GumbelQuantize``: only its embedding is needed to decode."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embed = nn.Embedding(n_embed, embed_dim)


class VQGANDecoder(nn.Module):
    """Codes (B, h, w) -> images (B, 3, 8h, 8w) in [-1, 1]: taming's ``GumbelVQ.decode_code``."""

    def __init__(self, n_embed: int, embed_dim: int, **ddconfig: Any):
        super().__init__()
        names = (
            "ch",
            "out_ch",
            "ch_mult",
            "num_res_blocks",
            "attn_resolutions",
            "resolution",
            "z_channels",
        )
        self.quantize = _Codebook(n_embed, embed_dim)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.decoder = _Decoder(**{k: ddconfig[k] for k in names})

    @torch.inference_mode()
    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        # GumbelQuantize.get_codebook_entry: one-hot x embedding = an embedding lookup
        quant = self.quantize.embed(codes).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(quant))


def load_vqgan(folder: str | Path) -> VQGANDecoder:
    """The VQGAN decoder from a folder with ``last.ckpt`` and ``model.yaml`` (or its ``vqgan/``)."""
    root = Path(folder)
    if (root / "vqgan").is_dir():
        root = root / "vqgan"
    for name in VQGAN_FILES:
        if not (root / name).is_file():
            raise OFAFileNotFoundError(
                f"VQGAN file {root / name} not found: decoding image codes to pixels needs "
                "vqgan/last.ckpt and vqgan/model.yaml from OFA's image_gen release "
                "(image_gen_large_best.zip); pass vqgan=<the folder holding them>"
            )
    try:
        import yaml
    except ImportError as err:
        raise ImportError(
            "reading the VQGAN's model.yaml needs PyYAML: pip install pyyaml"
        ) from err
    params = yaml.safe_load((root / "model.yaml").read_text())["model"]["params"]
    model = VQGANDecoder(params["n_embed"], params["embed_dim"], **params["ddconfig"])
    ckpt = safe_torch_load(root / "last.ckpt")  # a Lightning checkpoint: weights under state_dict
    state = ckpt.get("state_dict", ckpt)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    return model.eval()


def codes_to_images(codes: torch.Tensor, vqgan: VQGANDecoder) -> list[Image.Image]:
    """Code grids (B, h, w) -> RGB images, as OFA's ``custom_to_pil`` (clamp, [0, 255], truncate)."""
    x = vqgan(codes.to(vqgan.post_quant_conv.weight.device)).float().clamp(-1, 1)
    arr = ((x + 1) / 2 * 255).permute(0, 2, 3, 1).cpu().numpy().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]
