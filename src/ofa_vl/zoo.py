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
from .generation.config import GenerationConfig
from .hub import is_hub_id, resolve_files
from .overlay import Overlay
from .preprocess import PreprocessConfig
from .runs import cache_dir, publish, sha256_file

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
    # "english" = the packaged English BPE (every English OFA); "chinese" = the packaged OFA-CN
    # vocabulary; "bundled" = beside the weights; else a hub id or directory
    tokenizer: str = "english"
    task_options: dict[str, Any] = field(default_factory=dict)  # the task's own (answers, ...)
    generation: Overlay[GenerationConfig] = field(default_factory=lambda: decoding())
    preprocessing: Overlay[PreprocessConfig] = field(default_factory=lambda: inputs())
    metrics: dict[str, float] = field(default_factory=dict)  # published reference numbers
    notes: str = ""

    @property
    def language(self) -> str:
        """``"zh"`` for the OFA-CN models, else ``"en"``."""
        return "zh" if self.tokenizer == "chinese" else "en"


def decoding(**options: Any) -> Overlay[GenerationConfig]:
    """A card's decoding defaults (over its task's)."""
    return Overlay.of(GenerationConfig(), options)


def inputs(**options: Any) -> Overlay[PreprocessConfig]:
    """A card's preprocessing (over its task's): interpolation, text normalisation, ..."""
    return Overlay.of(PreprocessConfig(), options)


MODELS: dict[str, ModelCard] = {}
DEFAULT_MODEL = "ofa-tiny_shapes"  # the bundled model: runs offline, in seconds


def register(card: ModelCard) -> ModelCard:
    MODELS[card.name] = card
    return card


# mmpretrain 1.2.0 configs/ofa/metafile.yml (converted from the official fairseq checkpoints); each
# card takes its config's whole test pipeline (docs/pipelines.md): zero-shot VQA cleans the question
# (_base_/datasets/coco_vqa.py CleanCaption), refcoco boxes are bin / 1000 * 512 (OFA.post_process)
MMP_ZEROSHOT_VQA = inputs(text_norm={"question": "clean"})
register(ModelCard(
    "ofa-base_3rdparty-finetuned_caption", "caption",
    MMP + "ofa-base_3rdparty_coco-caption_20230418-de18914e.pth",
    metrics={"BLEU-4": 42.64, "CIDEr": 144.50},
))  # fmt: skip
register(ModelCard(
    "ofa-base_3rdparty-finetuned_refcoco", "refcoco",
    MMP + "ofa-base_3rdparty_refcoco_20230418-2797d3ab.pth",
    task_options={"divisor": "mmpretrain"},
    metrics={"Accuracy (testA)": 90.49, "Accuracy (testB)": 83.63},
))  # fmt: skip
register(ModelCard(
    "ofa-base_3rdparty-finetuned_vqa", "vqa",
    MMP + "ofa-base_3rdparty_coco-vqa_20230418-f38539a5.pth",
    task_options={"answers_url": ANS2LABEL},
    generation=decoding(num_beams=5, max_new_tokens=200, length_penalty=0.0),
    metrics={"Accuracy": 78.00},
))  # fmt: skip
register(ModelCard(
    "ofa-base_3rdparty-zeroshot_vqa", "vqa",
    MMP + "ofa-base_3rdparty_pretrain_20230418-dccfc07f.pth",
    preprocessing=MMP_ZEROSHOT_VQA,
    generation=decoding(num_beams=20, max_new_tokens=200, length_penalty=0.0),
    metrics={"Accuracy": 58.32},
))  # fmt: skip
register(ModelCard(
    "ofa-large_3rdparty-zeroshot_vqa", "vqa", OFA_OSS + "ofa_large.pt",
    preprocessing=MMP_ZEROSHOT_VQA,
    generation=decoding(num_beams=20, max_new_tokens=200, length_penalty=0.0),
    notes="mmpretrain's config converts the official ofa_large.pt; loaded here directly",
))  # fmt: skip

# The bundled model: trained on the synthetic shapes world on a CPU (assets/ofa-tiny_shapes/MODEL_CARD.md)
register(ModelCard(
    DEFAULT_MODEL, "caption", DEFAULT_MODEL, tokenizer="bundled",
    notes="small OFA trained multitask on the synthetic shapes world; runs offline in seconds",
))  # fmt: skip

# The official fairseq checkpoints (OFA:checkpoints.md); no published hashes. Their pipeline is
# the official code's: every dataset resizes with Pillow bicubic (caption_dataset.py,
# vqa_gen_dataset.py transforms.Resize; refcoco_dataset.py utils/transforms.py resize), and text
# goes through OFA:data/ofa_dataset.py pre_caption / pre_question (docs/pipelines.md).
OFFICIAL = inputs(interpolation="bicubic")
OFFICIAL_REFCOCO = inputs(interpolation="bicubic", text_norm={"text": "pre_caption"})
OFFICIAL_VQA = inputs(interpolation="bicubic", text_norm={"question": "pre_question"})
for size in ("tiny", "medium", "base", "large", "huge"):
    register(ModelCard(f"ofa-{size}_official-pretrain", "caption", OFA_OSS + f"ofa_{size}.pt",
                       preprocessing=OFFICIAL))  # fmt: skip
    register(
        ModelCard(
            f"ofa-{size}_hf-pretrain",
            "caption",
            f"hf-hub:OFA-Sys/OFA-{size}",
            preprocessing=OFFICIAL,
        )
    )  # fmt: skip  (the HF port's README: BICUBIC)
for size in ("base", "large"):
    for task, file, pre, opts in (
        ("caption", "caption_{}_best.pt", OFFICIAL, {}),
        ("refcoco", "refcoco_{}_best.pt", OFFICIAL_REFCOCO, {}),
        ("refcoco", "refcocoplus_{}_best.pt", OFFICIAL_REFCOCO, {}),
        ("refcoco", "refcocog_{}_best.pt", OFFICIAL_REFCOCO, {}),
        ("vqa", "vqa_{}_best.pt", OFFICIAL_VQA, {"answers_url": ANS2LABEL}),
    ):
        fname = file.format(size)
        tag = fname.split("_")[0]
        register(ModelCard(f"ofa-{size}_official-finetuned_{tag}", task, OFA_OSS + fname,
                           task_options=opts, preprocessing=pre))  # fmt: skip
register(ModelCard(
    "ofa-large_official-finetuned_caption_clean", "caption", OFA_OSS + "caption_large_best_clean.pt",
    preprocessing=OFFICIAL, notes="after CIDEr optimisation (SCST)",
))  # fmt: skip


# OFA-CN (OFA:checkpoints_cn.md): Chinese vocabulary (BERT word pieces, 30,325 ids), Chinese prompts,
# the official preprocessing (no mmpretrain configs exist) and the official run scripts' decoding.
# fairseq's max_len_b counts the tokens before the forced </s> step: max_new_tokens = max_len_b + 1.
_ZH: dict[str, Any] = {"language": "zh"}
_BICUBIC = inputs(interpolation="bicubic")  # torchvision Resize
_CN_CAPTION_GEN = decoding(  # OFA:run_scripts/caption/generate_caption_cn.sh
    num_beams=8, fairseq=True, max_new_tokens=129, no_repeat_ngram_size=3,
)  # fmt: skip
_CN_REFCOCO_GEN = decoding(  # OFA:run_scripts/refcoco/evaluate_refcoco_cn.sh
    num_beams=5, fairseq=True, min_new_tokens=4, max_new_tokens=5, no_repeat_ngram_size=3,
)  # fmt: skip
# task, file, preprocessing, decoding (ocr: the task's own = evaluate_ocr.sh), notes
_CN_FINETUNED: tuple[  # (card tag, task, file, preprocessing, decoding, notes)
    tuple[str, str, str, Overlay[PreprocessConfig], Overlay[GenerationConfig], str], ...
] = (
    ("caption", "caption", "caption_cn_{}.pt", _BICUBIC, _CN_CAPTION_GEN, "MUGE caption (stage 1)"),
    ("refcoco", "refcoco", "refcoco_cn_{}.pt", _BICUBIC, _CN_REFCOCO_GEN, "RefCOCO-CN (translated)"),
    ("refcocoplus", "refcoco", "refcocoplus_cn_{}.pt", _BICUBIC, _CN_REFCOCO_GEN,
     "RefCOCO+-CN (translated)"),
    ("refcocog", "refcoco", "refcocog_cn_{}.pt", _BICUBIC, _CN_REFCOCO_GEN,
     "RefCOCOg-CN (translated)"),
    ("ocr", "ocr", "ofa_cn_ocr_{}.pt", inputs(), decoding(), "Chinese OCR, multitask fine-tuned"),
)  # fmt: skip
_CN_METRICS: dict[str, dict[str, float]] = {  # OFA:checkpoints_cn.md results tables
    "caption_cn_base.pt": {"BLEU-4": 26.23, "ROUGE-L": 58.95, "CIDEr-D": 50.70},
    "caption_cn_large.pt": {"BLEU-4": 27.32, "ROUGE-L": 59.20, "CIDEr-D": 53.51},
    "refcoco_cn_base.pt": {"Accuracy (val)": 82.18, "Accuracy (testA)": 86.07,
                           "Accuracy (testB)": 76.68},
    "refcoco_cn_large.pt": {"Accuracy (val)": 82.84, "Accuracy (testA)": 86.54,
                            "Accuracy (testB)": 76.50},
    "refcocoplus_cn_base.pt": {"Accuracy (val)": 69.38, "Accuracy (testA)": 77.26,
                               "Accuracy (testB)": 60.14},
    "refcocoplus_cn_large.pt": {"Accuracy (val)": 71.30, "Accuracy (testA)": 78.56,
                                "Accuracy (testB)": 61.85},
    "refcocog_cn_base.pt": {"Accuracy (val)": 73.57, "Accuracy (test-u)": 72.53},
    "refcocog_cn_large.pt": {"Accuracy (val)": 71.96, "Accuracy (test-u)": 71.30},
}  # fmt: skip
for size in ("base", "large"):
    register(ModelCard(f"ofa-cn-{size}_official-pretrain", "caption", OFA_OSS + f"ofa_cn_{size}.pt",
                       tokenizer="chinese", task_options=_ZH, preprocessing=_BICUBIC,
                       notes="OFA-CN pretrained"))  # fmt: skip
    for tag, task, file, pre, generation, notes in _CN_FINETUNED:
        fname = file.format(size)
        register(ModelCard(
            f"ofa-cn-{size}_official-finetuned_{tag}", task, OFA_OSS + fname, tokenizer="chinese",
            task_options=_ZH, preprocessing=pre, generation=generation,
            metrics=_CN_METRICS.get(fname, {}),
            notes=f"OFA-CN: {notes}",
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


def resolve_checkpoint(name_or_ref: str, beside: tuple[str, ...] = ()) -> Path:
    """A zoo name, ``hf-hub:org/name``, bare ``org/name`` or URL -> a local weights path; from
    the hub, with the files of ``beside`` the repository has (a model folder's)."""
    ref = MODELS[name_or_ref].weights if name_or_ref in MODELS else name_or_ref
    if ref.startswith("hf-hub:") or is_hub_id(ref):
        files = resolve_files(
            ref.removeprefix("hf-hub:"),
            [("model.safetensors",), ("pytorch_model.bin",)],
            optional=("config.json", *beside),
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
