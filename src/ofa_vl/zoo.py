"""Named OFA models (timm / open_clip style) and the download cache behind them.

A name carries everything: the weights' source and hash, the task with its preprocessing and
decoding defaults, and the tokenizer. ``list_models`` / ``get_model`` in :mod:`ofa_vl.api` use it.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .errors import OFARuntimeError, OFAValueError
from .hub import is_hub_id, resolve_files
from .runs import publish, sha256_file

MMP = "https://download.openmmlab.com/mmclassification/v1/ofa/"
OFA_OSS = "https://ofa-beijing.oss-cn-beijing.aliyuncs.com/checkpoints/"
ANS2LABEL = (
    "https://ofa-beijing.oss-cn-beijing.aliyuncs.com/datasets/vqa_data/trainval_ans2label.pkl"
)
PACKAGE_ASSETS = Path(__file__).resolve().parent / "assets"


class DownloadError(OFARuntimeError):
    """A file that could not be fetched, with the URL and where to put it by hand."""


@dataclass(frozen=True)
class ModelCard:
    name: str
    task: str
    weights: str  # URL, hf-hub:org/name, or a path relative to the package assets
    # "english" = the packaged English BPE (every English OFA); "bundled" = beside the weights;
    # else a hub id or directory
    tokenizer: str = "english"
    task_options: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # published reference numbers
    notes: str = ""


MODELS: dict[str, ModelCard] = {}
DEFAULT_MODEL = "ofa-tiny_shapes"  # the bundled model: runs offline, in seconds


def register(card: ModelCard) -> ModelCard:
    MODELS[card.name] = card
    return card


# mmpretrain 1.2.0 configs/ofa/metafile.yml (converted from the official fairseq checkpoints)
register(ModelCard(
    "ofa-base_3rdparty-finetuned_caption", "caption",
    MMP + "ofa-base_3rdparty_coco-caption_20230418-de18914e.pth",
    metrics={"BLEU-4": 42.64, "CIDEr": 144.50},
))  # fmt: skip
register(ModelCard(
    "ofa-base_3rdparty-finetuned_refcoco", "refcoco",
    MMP + "ofa-base_3rdparty_refcoco_20230418-2797d3ab.pth",
    metrics={"Accuracy (testA)": 90.49, "Accuracy (testB)": 83.63},
))  # fmt: skip
register(ModelCard(
    "ofa-base_3rdparty-finetuned_vqa", "vqa",
    MMP + "ofa-base_3rdparty_coco-vqa_20230418-f38539a5.pth",
    task_options={"answers_url": ANS2LABEL},
    generation={"num_beams": 5, "max_new_tokens": 200, "length_penalty": 0.0},
    metrics={"Accuracy": 78.00},
))  # fmt: skip
register(ModelCard(
    "ofa-base_3rdparty-zeroshot_vqa", "vqa",
    MMP + "ofa-base_3rdparty_pretrain_20230418-dccfc07f.pth",
    generation={"num_beams": 20, "max_new_tokens": 200, "length_penalty": 0.0},
    metrics={"Accuracy": 58.32},
))  # fmt: skip
register(ModelCard(
    "ofa-large_3rdparty-zeroshot_vqa", "vqa", OFA_OSS + "ofa_large.pt",
    generation={"num_beams": 20, "max_new_tokens": 200, "length_penalty": 0.0},
    notes="mmpretrain's config converts the official ofa_large.pt; loaded here directly",
))  # fmt: skip

# The bundled model: trained on the synthetic shapes world on a CPU (assets/ofa-tiny_shapes/MODEL_CARD.md)
register(ModelCard(
    DEFAULT_MODEL, "caption", DEFAULT_MODEL, tokenizer="bundled",
    notes="small OFA trained multitask on the synthetic shapes world; runs offline in seconds",
))  # fmt: skip

# The official fairseq checkpoints (OFA:checkpoints.md); no published hashes.
for size in ("tiny", "medium", "base", "large", "huge"):
    register(ModelCard(f"ofa-{size}_official-pretrain", "caption", OFA_OSS + f"ofa_{size}.pt"))
    register(ModelCard(f"ofa-{size}_hf-pretrain", "caption", f"hf-hub:OFA-Sys/OFA-{size}"))
for size in ("base", "large"):
    for task, file, opts in (
        ("caption", "caption_{}_best.pt", {}),
        ("refcoco", "refcoco_{}_best.pt", {}),
        ("refcoco", "refcocoplus_{}_best.pt", {}),
        ("refcoco", "refcocog_{}_best.pt", {}),
        ("vqa", "vqa_{}_best.pt", {"answers_url": ANS2LABEL}),
    ):
        fname = file.format(size)
        tag = fname.split("_")[0]
        register(ModelCard(f"ofa-{size}_official-finetuned_{tag}", task, OFA_OSS + fname,
                           task_options=opts))  # fmt: skip
register(ModelCard(
    "ofa-large_official-finetuned_caption_clean", "caption", OFA_OSS + "caption_large_best_clean.pt",
    notes="after CIDEr optimisation (SCST)",
))  # fmt: skip


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered names matching a shell-style ``pattern`` and/or ``task``, sorted."""
    names = [
        n
        for n, c in MODELS.items()
        if (pattern is None or fnmatch.fnmatch(n, pattern) or (pattern in n and "*" not in pattern))
        and (task is None or c.task == task)
    ]
    return sorted(names)


def get_card(name: str) -> ModelCard:
    if name not in MODELS:
        close = [n for n in MODELS if name.lower() in n.lower()]
        hint = f"; did you mean {', '.join(close[:3])}?" if close else "; see `ofa models`"
        raise OFAValueError(f"unknown model {name!r}{hint}")
    return MODELS[name]


# --------------------------------------------------------------------------- downloads
def cache_dir() -> Path:
    """``$OFA_VL_HOME`` or ``~/.cache/ofa_vl``."""
    return Path(os.environ.get("OFA_VL_HOME", Path.home() / ".cache" / "ofa_vl"))


def _hash_prefix(filename: str) -> str | None:
    """The sha256 prefix in names like ``..._20230418-2797d3ab.pth`` (timm / mmcv convention)."""
    m = re.search(r"-([0-9a-f]{8,64})\.[a-z]+$", filename)
    return m.group(1) if m else None


def download(url: str, dest_dir: Path | None = None, progress: bool = True) -> Path:
    """Fetch ``url`` into the cache once, through ``huggingface_hub``'s downloader.

    The transfer retries and resumes cut connections and must end at the ``Content-Length``; the
    sha256 prefix in the file name (timm / mmcv convention), when there is one, must match. Only
    then is the temporary file renamed into the cache: a partial file never is.
    """
    from huggingface_hub.file_download import http_get

    dest_dir = dest_dir or cache_dir() / "checkpoints"
    name = url.rstrip("/").split("/")[-1]
    dest = dest_dir / name
    if dest.is_file():
        return dest
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(
            f"cannot create the download cache {dest_dir} ({err.strerror}); set OFA_VL_HOME to a "
            "writable folder"
        ) from None
    tmp = dest.with_name(f".{name}.{os.getpid()}.part")
    try:
        with tmp.open("wb") as f:
            http_get(url, f, displayed_filename=name, tqdm_class=None if progress else _Quiet)
        want = _hash_prefix(name)
        if want and not (found := sha256_file(tmp)).startswith(want):
            raise DownloadError(
                f"{url}: sha256 {found[:8]}... does not match the {want} in its name; the download "
                "is corrupt, try again"
            )
        publish(tmp, dest)
    except DownloadError:
        raise
    except Exception as err:  # any transfer failure (HTTP status, network, size, disk): no file
        raise DownloadError(
            f"cannot download {url} ({str(err).splitlines()[0] if str(err) else type(err).__name__});"
            f" download it by hand to {dest} or pass a local path"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return dest


class _Quiet(tqdm):
    """A progress bar that shows nothing (``download(progress=False)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("name", None)
        super().__init__(*args, **{**kwargs, "disable": True})


def resolve_checkpoint(name_or_ref: str) -> Path:
    """A zoo name, ``hf-hub:org/name``, bare ``org/name`` or URL -> a local weights path."""
    ref = MODELS[name_or_ref].weights if name_or_ref in MODELS else name_or_ref
    if ref.startswith("hf-hub:") or is_hub_id(ref):
        files = resolve_files(
            ref.removeprefix("hf-hub:"),
            [("model.safetensors",), ("pytorch_model.bin",)],
            optional=("config.json",),
        )
        return next(iter(files.values())).parent
    if ref.startswith(("http://", "https://")):
        return download(ref)
    if name_or_ref not in MODELS:
        get_card(name_or_ref)  # raises: unknown model, with suggestions
    path = PACKAGE_ASSETS / ref
    if not path.exists():
        raise FileNotFoundError(
            f"model {name_or_ref!r}: its files {path} are missing from the package"
        )
    return path
