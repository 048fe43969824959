"""Every published form of OFA weights -> one canonical state dict -> :class:`OFA`.

Formats (``../shared/OFA-NOTES.md`` section 3):

- mmpretrain's converted ``.pth``: a plain state dict, keys ``model.encoder.*`` / ``model.decoder.*``
  (``MMP:tools/model_converters/ofa.py``). Its names are this project's canonical names.
- official fairseq ``.pt``: ``{"model": state_dict, "extra_state": {"ema": ...}, "cfg": <OmegaConf>}``;
  read with the restricted unpickler of ``unpickle.py`` (tensors, containers, inert configs).
- the HuggingFace port: ``pytorch_model.bin`` / ``model.safetensors`` (+ ``config.json``).
- this project's own: a ``.safetensors`` file whose metadata holds the :class:`OFAConfig` JSON.

The architecture is inferred from the tensors; index buffers (``*_rp_bucket``,
``image_position_idx``) are dropped and recomputed.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch

from .config import OFAConfig
from .errors import OFAFileExistsError, OFAValueError
from .model import OFA
from .options import check_device
from .runs import publish
from .unpickle import UnpickleError, safe_torch_load

OWN_FORMAT = "ofa-vl"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pth", "model.pt")
_BUFFERS = ("token_rp_bucket", "image_rp_bucket", "image_position_idx", "version")
_TIED = (
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.output_projection.weight",
)

# Module renames after ``{encoder,decoder}.`` (fairseq and the HF port share them).
_TOP_RENAMES = {
    "type_embedding": "embed_type",
    "layernorm_embedding": "embedding_ln",
    "patch_layernorm_embedding": "image_embedding_ln",
    "code_layernorm_embedding": "code_embedding_ln",
    "layer_norm": "final_ln",
}
# Renames after ``encoder.layers.{i}.`` (fairseq names, then the HF port's).
_ENC_LAYER_RENAMES = {
    "self_attn": "attn",
    "self_attn_layer_norm": "attn_ln",
    "attn_ln": "attn_mid_ln",
    "self_attn_mid_layer_norm": "attn_mid_ln",
    "ffn_layernorm": "ffn_mid_ln",
    "ffn_layer_norm": "ffn_mid_ln",
    "final_layer_norm": "ffn_ln",
}
# Renames after ``decoder.layers.{i}.``.
_DEC_LAYER_RENAMES = {
    "self_attn_layer_norm": "self_attn_ln",
    "self_attn_ln": "self_attn_mid_ln",
    "self_attn_mid_layer_norm": "self_attn_mid_ln",
    "encoder_attn": "cross_attn",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "cross_attn_layer_norm": "cross_attn_ln",
    "cross_attn_ln": "cross_attn_mid_ln",
    "cross_attn_mid_layer_norm": "cross_attn_mid_ln",
    "ffn_layernorm": "ffn_mid_ln",
    "ffn_layer_norm": "ffn_mid_ln",
    "final_layer_norm": "ffn_ln",
}


class CheckpointError(OFAValueError):
    """A checkpoint file that cannot be used, with a one-line reason."""


# --------------------------------------------------------------------------- key mapping
def _rename_fairseq(key: str) -> str:
    parts = key.split(".")
    side = parts[0]
    if len(parts) > 1 and parts[1] in _TOP_RENAMES:
        parts[1] = _TOP_RENAMES[parts[1]]
    elif len(parts) > 3 and parts[1] == "layers":
        table = _ENC_LAYER_RENAMES if side == "encoder" else _DEC_LAYER_RENAMES
        parts[3] = table.get(parts[3], parts[3])
    return ".".join(parts)


def canonical_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any OFA state dict -> this project's names (mmpretrain's, without ``model.``)."""
    out: dict[str, torch.Tensor] = {}
    fairseq_names = any(k.endswith("encoder.layer_norm.weight") for k in sd)
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue
        if key.startswith("model."):
            key = key[len("model.") :]
        if key.split(".")[-1] in _BUFFERS or key in _TIED or key == "embed_tokens.weight":
            if key in _TIED or key == "embed_tokens.weight":
                out.setdefault("embed_tokens.weight", value)
            continue
        out[_rename_fairseq(key) if fairseq_names else key] = value
    return out


def _count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def infer_config(sd: dict[str, torch.Tensor], code_ids_len: int | None = None) -> OFAConfig:
    """Read the architecture off the tensors of a canonical state dict."""
    try:
        vocab, dim = sd["embed_tokens.weight"].shape
        n_token, heads = sd["encoder.token_rel_pos_table_list.0.weight"].shape
        n_image = sd["encoder.image_rel_pos_table_list.0.weight"].shape[0]
        ffn = sd["encoder.layers.0.fc1.weight"].shape[0]
        width = sd["encoder.embed_images.conv1.weight"].shape[0]
        max_pos = sd["encoder.embed_positions.weight"].shape[0] - 2
    except KeyError as e:
        raise CheckpointError(f"not an OFA state dict: tensor {e.args[0]} is missing") from None
    blocks = tuple(_count(sd, rf"encoder\.embed_images\.layer{i}\.(\d+)\.") for i in (1, 2, 3))
    image_bucket = (math.isqrt(n_image - 3) + 1) // 2
    code_image_size = 128
    if code_ids_len is not None:  # 1 + window^2 + 768 (mmpretrain, HF) or + 769 (fairseq)
        for pad in (768, 769):
            w = math.isqrt(max(code_ids_len - 1 - pad, 0))
            if w > 0 and w * w == code_ids_len - 1 - pad:
                code_image_size = 8 * w
                break
    depths: dict[tuple[int, ...], int] = {(3, 4, 6): 50, (3, 4, 23): 101, (3, 8, 36): 152}
    depth = depths.get(blocks)
    return OFAConfig(
        embed_dim=dim,
        encoder_layers=_count(sd, r"encoder\.layers\.(\d+)\."),
        decoder_layers=_count(sd, r"decoder\.layers\.(\d+)\."),
        num_heads=heads,
        ffn_dim=None if ffn == 4 * dim else ffn,
        resnet_depth=depth or 101,
        resnet_layers=None if depth and width == 64 else blocks,
        resnet_width=width,
        vocab_size=vocab,
        max_positions=max_pos,
        token_bucket_size=(n_token + 1) // 2,
        image_bucket_size=image_bucket,
        code_image_size=code_image_size,
    )


def build_from_state_dict(
    sd: dict[str, torch.Tensor], source: str, config: OFAConfig | None = None
) -> OFA:
    """Canonicalise ``sd``, infer (or take) the architecture, and load it strictly."""
    code_ids = next((v for k, v in sd.items() if k.endswith("decoder.image_position_idx")), None)
    canon = canonical_state_dict(sd)
    cfg = config or infer_config(canon, None if code_ids is None else code_ids.numel())
    model = OFA(cfg)
    expected = model.state_dict()
    for k in _TIED:
        expected.pop(k, None)
    missing = [k for k in expected if k not in canon and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in canon if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{source}: not a matching OFA checkpoint: {'; '.join(parts)}")
    for k, v in canon.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(
                f"{source}: tensor {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
            )
    params = dict(model.named_parameters())
    broken = [k for k, v in canon.items() if k in params and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(
            f"{source}: {len(broken)} weight tensors hold NaN or infinite values (e.g. {broken[0]}); "
            "the checkpoint is corrupt or from a diverged run"
        )
    model.load_state_dict(canon, strict=False)
    return model.eval()


# --------------------------------------------------------------------------- files
def _own_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], OFAConfig | None]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from e
    cfg = None
    if meta.get("format") == OWN_FORMAT and "config" in meta:
        cfg = OFAConfig.from_dict(json.loads(meta["config"]))
    return sd, cfg


def read_state_dict(
    path: Path, use_ema: bool = True
) -> tuple[dict[str, torch.Tensor], OFAConfig | None]:
    """A weights file of any supported format -> (state dict, config if the file has one)."""
    if path.suffix == ".safetensors":
        return _own_safetensors(path)
    try:
        obj = safe_torch_load(path)
    except UnpickleError as e:
        raise CheckpointError(str(e)) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):  # fairseq
        sd = obj["model"]
        ema = (
            (obj.get("extra_state") or {}).get("ema")
            if isinstance(obj.get("extra_state"), dict)
            else None
        )
        if use_ema and isinstance(ema, dict) and ema:
            sd = ema
        return sd, None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # mmengine runner
        return obj["state_dict"], None
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    raise CheckpointError(f"{path}: holds no OFA state dict (found {type(obj).__name__})")


def resolve_weights(path: Path) -> Path:
    """A weights file, or the weights file inside a model directory."""
    if path.is_dir():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{path}: directory holds no weights (expected one of {', '.join(WEIGHT_FILES)})"
        )
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    return path


def load_model(
    path_or_name: str | Path,
    *,
    use_ema: bool = True,
    config: OFAConfig | None = None,
    device: str | torch.device | None = None,
) -> OFA:
    """Any OFA weights: a file, a directory, a hub id (``OFA-Sys/OFA-base``) or a zoo name."""
    path = Path(path_or_name)
    if isinstance(path_or_name, str) and path_or_name.startswith(("http://", "https://")):
        from .zoo import download

        path = download(path_or_name)  # a URL is a URL, whatever its suffix
    elif not path.exists():
        if not isinstance(path_or_name, str) or path.suffix or path.is_absolute():
            raise CheckpointError(f"{path}: no such file or directory")
        from .zoo import resolve_checkpoint  # a zoo name or a hub id

        path = resolve_checkpoint(path_or_name)
    weights = resolve_weights(path)
    sd, own_cfg = read_state_dict(weights, use_ema=use_ema)
    model = build_from_state_dict(sd, str(weights), config or own_cfg)
    model.weights_file = weights
    if device is None:
        return model
    check_device(device)
    return model.to(device)


def save_pretrained(model: OFA, path: str | Path) -> Path:
    """Write ``model`` in this project's format: one safetensors file, config in its metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.is_dir():
        raise OFAFileExistsError(f"{path} is a directory; give a .safetensors file to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k not in _TIED}
    if any(".lora_" in k for k in sd):  # PEFT's layers rename the weights they wrap
        raise OFAValueError(
            "the model has a LoRA adapter: save it with ofa_vl.lora.save_adapter, or "
            "merge_adapter() it first to save plain weights"
        )
    meta = {"format": OWN_FORMAT, "config": json.dumps(model.cfg.to_dict())}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(sd, str(tmp), metadata=meta)
        publish(tmp, path)
    finally:  # a full or read-only disk leaves no half-written file behind
        tmp.unlink(missing_ok=True)
    return path


def convert(src: str | Path, dst: str | Path, *, use_ema: bool = True) -> Path:
    """``ofa convert``: any supported checkpoint -> this project's safetensors format."""
    return save_pretrained(load_model(src, use_ema=use_ema), dst)


__all__ = [
    "CheckpointError",
    "build_from_state_dict",
    "canonical_state_dict",
    "convert",
    "infer_config",
    "load_model",
    "read_state_dict",
    "safe_torch_load",
    "save_pretrained",
]
