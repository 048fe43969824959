"""LoRA adapters for fine-tuning large OFA models on small hardware, through PEFT.

``add_lora`` injects PEFT's LoRA layers (``peft.inject_adapter_in_model``) into the attention
projections and FFN Linears of the encoder and decoder layers and freezes everything else: the
model stays an :class:`OFA` with the same ``forward`` and ``generate`` (a wrapped Linear is no
``nn.Linear``, so :func:`ofa_vl.model.linear.linear` calls the module and the adapter runs).
``save_adapter`` writes only the adapter (``adapter.safetensors``, ``adapter.json``);
``merge_adapter`` folds it into the weights and leaves a plain OFA (``ofa convert
--merge-adapter``). LoRA: Hu et al. 2021; ``alpha / rank`` scales the update, as in PEFT.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import OFAFileNotFoundError, OFAValueError
from .model import OFA

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"
ADAPTER_FORMAT = "ofa-vl-lora"
ADAPTER_NAME = "default"  # PEFT's adapter name; saved tensor names leave it out, as PEFT's do
_OPTIONS = "lora_options"  # the model attribute add_lora records its options in
_LAYERS = r"(encoder|decoder)\.layers\.\d+\."
# named target groups -> patterns of module names (OFA's NormFormer layers, model/layers.py)
TARGET_GROUPS = {
    "attention": _LAYERS + r"(attn|self_attn|cross_attn)\.(q|k|v|out)_proj",
    "ffn": _LAYERS + r"fc[12]",
}


@dataclass(frozen=True)
class LoraOptions:
    """Rank, scale (``alpha / rank``), dropout and targets: group names of ``TARGET_GROUPS``
    or regular expressions matching a module name or its dotted tail (``q_proj``,
    ``decoder\\.layers\\.\\d+\\.fc1``)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("attention", "ffn")

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))  # lists from JSON / argparse
        if not isinstance(self.rank, int) or self.rank <= 0:
            raise OFAValueError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if not self.alpha > 0:
            raise OFAValueError(f"LoRA alpha must be positive, got {self.alpha!r}")
        if not 0 <= self.dropout < 1:
            raise OFAValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if not self.targets:
            raise OFAValueError(
                f"LoRA needs targets: groups ({', '.join(TARGET_GROUPS)}) or patterns"
            )
        for target in self.targets:
            try:
                re.compile(TARGET_GROUPS.get(target, target))
            except re.error as e:
                raise OFAValueError(f"LoRA target {target!r} is no valid pattern: {e}") from e

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoraOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise OFAValueError(f"unknown LoRA options {', '.join(unknown)}")
        return cls(**d)


def _import_peft() -> Any:
    from .model.precision import quiet_torchao_import

    try:
        with quiet_torchao_import():  # PEFT imports torchao when it is installed
            import peft
    except ImportError as e:
        raise OFAValueError("LoRA needs PEFT: pip install 'ofa-vl[lora]'") from e
    return peft


def _matches(pattern: str, name: str) -> bool:
    """Whether ``pattern`` fully matches ``name`` or one of its dotted tails."""
    parts = name.split(".")
    return any(re.fullmatch(pattern, ".".join(parts[i:])) for i in range(len(parts)))


def target_modules(model: OFA, targets: tuple[str, ...]) -> list[str]:
    """Names of the Linears ``targets`` select (not the output projection: it is the embedding)."""
    linears = [
        n
        for n, m in model.named_modules()
        if type(m) is nn.Linear and m.weight is not model.embed_tokens.weight
    ]
    chosen: set[str] = set()
    for target in targets:
        found = [n for n in linears if _matches(TARGET_GROUPS.get(target, target), n)]
        if not found:
            example = next((n for n in linears if ".layers." in n), linears[0])
            raise OFAValueError(
                f"LoRA target {target!r} is no group ({', '.join(TARGET_GROUPS)}) and matches "
                f"no Linear of the model (names such as {example})"
            )
        chosen.update(found)
    return [n for n in linears if n in chosen]


def has_adapter(model: nn.Module) -> bool:
    """Whether ``add_lora`` or ``load_adapter`` gave ``model`` an adapter (not merged yet)."""
    return getattr(model, _OPTIONS, None) is not None


def lora_options(model: nn.Module) -> LoraOptions:
    """The options ``add_lora`` injected the model's adapters with."""
    options = getattr(model, _OPTIONS, None)
    if not isinstance(options, LoraOptions):
        raise OFAValueError("the model has no LoRA adapter (add_lora or load_adapter first)")
    return options


def add_lora(model: OFA, options: LoraOptions) -> OFA:
    """Inject LoRA adapters into ``model`` (in place), freeze every other parameter, return it."""
    if has_adapter(model):
        raise OFAValueError("the model already has a LoRA adapter; merge_adapter() it first")
    names = target_modules(model, options.targets)
    peft = _import_peft()
    config = peft.LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=names,
        bias="none",
    )
    peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name)
    setattr(model, _OPTIONS, options)
    return model


def lora_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, each tensor once (the tied embedding once)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors, named as PEFT saves them (``...q_proj.lora_A.weight``)."""
    tag = f".{ADAPTER_NAME}."
    return {name.replace(tag, "."): p for name, p in model.named_parameters() if ".lora_" in name}


def _expected_shapes(model: OFA, options: LoraOptions) -> dict[str, tuple[int, ...]]:
    """The adapter tensors ``options`` would give a (plain) ``model``, with their shapes."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name in target_modules(model, options.targets):
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)
        shapes[f"{name}.lora_A.weight"] = (options.rank, layer.in_features)  # (r, C_in)
        shapes[f"{name}.lora_B.weight"] = (layer.out_features, options.rank)  # (C_out, r)
    return shapes


def _base_identity(model: OFA) -> dict[str, Any]:
    """The base weights an adapter belongs to: their file, its sha256 and the architecture."""
    from .runs import weights_fingerprint

    file = model.weights_file
    known = file is not None and file.is_file()
    return {
        "weights": str(file) if known else None,
        "fingerprint": weights_fingerprint(file) if known and file is not None else None,
        "config": model.cfg.to_dict(),
    }


def save_adapter(model: OFA, folder: Path, options: LoraOptions | None = None) -> Path:
    """Write ``adapter.safetensors`` and ``adapter.json`` (options, base model) into ``folder``."""
    from safetensors.torch import save_file

    from .runs import publish, write_atomic

    recorded = lora_options(model)
    if options is not None and options != recorded:
        raise OFAValueError(f"the model's adapter has {recorded}, not {options}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    tmp = folder / f".{ADAPTER_FILE}.tmp"
    try:
        save_file(sd, str(tmp), metadata={"format": ADAPTER_FORMAT})
        publish(tmp, folder / ADAPTER_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {"format": ADAPTER_FORMAT, "options": asdict(recorded), "base": _base_identity(model)}
    write_atomic(folder / ADAPTER_CONFIG, json.dumps(meta, indent=2) + "\n")
    return folder


def _read_adapter(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``adapter.json`` and the tensors of an adapter folder; one line when it is none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config, tensors = folder / ADAPTER_CONFIG, folder / ADAPTER_FILE
    if not config.is_file() or not tensors.is_file():
        raise OFAFileNotFoundError(
            f"{folder}: not a LoRA adapter folder (needs {ADAPTER_CONFIG} and {ADAPTER_FILE})"
        )
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except ValueError as e:
        raise OFAValueError(f"{config}: not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != ADAPTER_FORMAT:
        raise OFAValueError(f"{config}: not an ofa-vl LoRA adapter (format {ADAPTER_FORMAT!r})")
    try:
        return meta, load_file(str(tensors))
    except (SafetensorError, OSError) as e:
        raise OFAValueError(f"{tensors}: not a readable safetensors file: {e}") from e


def _check_fit(folder: Path, sd: dict[str, torch.Tensor], expected: dict[str, Any]) -> None:
    """Refuse, in one line, adapter tensors that do not fit the model's Linears."""
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        name = (unexpected or missing)[0]
        raise OFAValueError(
            f"{folder}: the adapter does not fit this model: {len(unexpected)} tensors for "
            f"modules it lacks, {len(missing)} missing (e.g. {name})"
        )
    for k, v in sd.items():
        if tuple(v.shape) != expected[k]:
            raise OFAValueError(
                f"{folder}: the adapter does not fit this model: {k} has shape "
                f"{tuple(v.shape)}, the model needs {expected[k]} (another base model?)"
            )


def load_adapter(model: OFA, folder: Path) -> OFA:
    """Add the adapter saved in ``folder`` to ``model`` (in place) and return it."""
    folder = Path(folder)
    meta, sd = _read_adapter(folder)
    options = LoraOptions.from_dict(meta.get("options") or {})
    if has_adapter(model):
        raise OFAValueError("the model already has a LoRA adapter; merge_adapter() it first")
    _check_fit(folder, sd, _expected_shapes(model, options))
    base = (meta.get("base") or {}).get("fingerprint")
    if base is not None and model.weights_file is not None and model.weights_file.is_file():
        from .runs import weights_fingerprint

        if weights_fingerprint(model.weights_file) != base:
            warnings.warn(
                f"{folder}: the adapter was trained on other weights than {model.weights_file} "
                f"({meta['base'].get('weights')}); its shapes fit, the results may not",
                stacklevel=2,
            )
    add_lora(model, options)
    params = adapter_state_dict(model)
    with torch.no_grad():
        for k, v in sd.items():
            params[k].copy_(v)
    return model


def merge_adapter(model: OFA) -> OFA:
    """Fold the adapter into the weights (``W + alpha / r * B A``) and remove it: a plain OFA,
    every parameter trainable again, whose state dict saves and loads like any other."""
    lora_options(model)
    peft = _import_peft()
    tuned = peft.tuners.tuners_utils.BaseTunerLayer
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, tuned)]
    for name, layer in layers:
        try:
            layer.merge(safe_merge=True)
        except ValueError as e:  # PEFT's safe merge found NaN
            raise OFAValueError(f"cannot merge the adapter of {name}: {e}") from e
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.get_base_layer())
    for attr in (_OPTIONS, "peft_config"):
        if hasattr(model, attr):
            delattr(model, attr)
    model.requires_grad_(True)
    return model


__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_FILE",
    "TARGET_GROUPS",
    "LoraOptions",
    "adapter_state_dict",
    "add_lora",
    "has_adapter",
    "load_adapter",
    "lora_options",
    "lora_parameters",
    "merge_adapter",
    "save_adapter",
    "target_modules",
]
