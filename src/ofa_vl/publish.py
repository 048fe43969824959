"""Publishing a model folder to the Hugging Face hub: ``ofa push DIR REPO_ID`` and
``OFAPipeline.push_to_hub``.

A model folder (``model.safetensors``, or a LoRA adapter's ``adapter.safetensors`` +
``adapter.json``; the tokenizer, ``pipeline.json``, ``validation.json``) goes up in one commit
(``huggingface_hub``: ``create_repo``, then ``upload_folder`` with the generated model card
``README.md``: base model, task, training data, validation metrics, preprocessing, decoding,
license and how to load it), so ``get_model("hf-hub:USER/REPO")`` loads it back. As
``transformers``' ``push_to_hub``, the token comes from ``huggingface-cli login`` / ``HF_TOKEN``
and ``HF_ENDPOINT`` picks another hub.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkpoints import load_model
from .errors import OFAFileNotFoundError, OFAValueError
from .hub import OFAHubError
from .lora import ADAPTER_CONFIG
from .model_folder import ADAPTER_FILES, SIDE_FILES, WEIGHTS_FILE, ModelFolder
from .tasks import get_task

__all__ = ["check_repo_id", "model_card", "push_folder"]

VALIDATION_FILE = "validation.json"  # ofa_vl.train.checkpointing.BEST_FILE: step, metric, value
# what a model folder holds that a user of the hub repo needs; anything else stays home
UPLOADED = (WEIGHTS_FILE, *ADAPTER_FILES, *SIDE_FILES, VALIDATION_FILE, "MODEL_CARD.md")
SETTINGS_FILE = "settings.json"  # a training run's options, beside its best/ folder


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _run_settings(folder: Path) -> dict[str, Any]:
    """The training run's options: ``settings.json`` in the folder (``OUT/``) or above it
    (``OUT/best/``)."""
    return _read_json(folder / SETTINGS_FILE) or _read_json(folder.parent / SETTINGS_FILE)


def _data_summary(settings: Mapping[str, Any]) -> str:
    """The training data folder and its lines per split, when the run names a local folder."""
    data = settings.get("data")
    if not data:
        return "not recorded (no settings.json of a training run beside the folder)"
    counts = []
    for split in ("train", "validation", "test"):
        meta = Path(str(data)) / split / "metadata.jsonl"
        if meta.is_file():
            with meta.open(encoding="utf-8") as lines:
                counts.append(f"{split} {sum(1 for line in lines if line.strip())}")
    return f"`{data}`" + (f" ({', '.join(counts)} examples)" if counts else "")


def model_card(
    folder: str | Path,
    repo_id: str,
    *,
    task: str | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
) -> str:
    """The ``README.md`` of ``repo_id`` for the model folder ``folder`` (a full model or a LoRA
    adapter): what the model is, how it was trained and validated, and how to load it."""
    folder = Path(folder)
    adapter = all((folder / f).is_file() for f in ADAPTER_FILES)
    settings = _run_settings(folder)
    spec = ModelFolder.read(folder) or ModelFolder()
    task = task or spec.task or settings.get("task") or "caption"
    base = base_model or settings.get("init")
    validation = _read_json(folder / VALIDATION_FILE)
    if adapter:
        decoding = spec.generation.to_dict()
        kind = f"LoRA adapter (rank {_read_json(folder / ADAPTER_CONFIG)['options'].get('rank')})"
    else:  # the task's decoding defaults, then the folder's
        decoding = spec.generation.over(get_task(task).generation).to_dict()
        count = sum(p.numel() for p in load_model(folder).parameters())
        kind = f"full model ({count:,} parameters)"
    front = ["---", "library_name: ofa-vl", f"license: {license}", "tags: [ofa, vision-language]"]
    if base:
        front.append(f"base_model: {base}")
    front.append("---")
    metric = (
        f"{validation.get('metric')} = {validation.get('value')} at step {validation.get('step')}"
        if validation
        else "none recorded (no validation.json)"
    )
    pre = {k: v for k, v in spec.preprocessing.to_dict().items() if k != "text_norm"}
    if adapter:  # the base network, then the adapter (ofa_vl.lora; pip install 'ofa-vl[lora]')
        code = [
            "from pathlib import Path",
            "from huggingface_hub import snapshot_download",
            "from ofa_vl import get_model",
            "from ofa_vl.lora import load_adapter",
            "",
            f'pipe = get_model("{base or "BASE"}", task="{task}")',
            f'load_adapter(pipe.model, Path(snapshot_download("{repo_id}")))',
            "# or merged weights: ofa convert BASE merged/ --merge-adapter DOWNLOADED_DIR",
        ]
    else:
        code = [
            "from ofa_vl import get_model",
            "",
            f'pipe = get_model("hf-hub:{repo_id}", task="{task}")',
        ]
    body = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"An [OFA](https://github.com/OFA-Sys/OFA) {kind} for ofa-vl, pushed with `ofa push`.",
        "",
        f"- **Task**: `{task}`",
        f"- **Base model**: {f'`{base}`' if base else 'not recorded'}",
        f"- **Training data**: {_data_summary(settings)}",
        f"- **Validation**: {metric}",
        f"- **Preprocessing** (`pipeline.json`): {json.dumps(pre) if pre else 'the task defaults'}",
        f"- **Decoding**: {json.dumps(decoding, sort_keys=True)}",
        f"- **License**: {license}",
        "",
        "## How to load",
        "",
        "```python",
        *code,
        "```",
        "",
    ]
    return "\n".join(front + body)


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    task: str | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload with ofa push",
) -> str:
    """``ofa push DIR REPO_ID``: create ``repo_id`` (kept when it exists) and upload the model
    folder's files with a generated ``README.md`` in one commit; the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    check_repo_id(repo_id)
    if not (folder / WEIGHTS_FILE).is_file() and not all(
        (folder / f).is_file() for f in ADAPTER_FILES
    ):
        raise OFAFileNotFoundError(
            f"{folder} is not a model folder: it needs {WEIGHTS_FILE}, or "
            f"{' + '.join(ADAPTER_FILES)} (a LoRA adapter)"
        )
    card = model_card(folder, repo_id, task=task, base_model=base_model, license=license)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    with tempfile.TemporaryDirectory(prefix="ofa-push-") as tmp:
        staged = Path(tmp)
        for name in UPLOADED:
            if (folder / name).is_file():
                _link_or_copy(folder / name, staged / name)
        (staged / "README.md").write_text(card, encoding="utf-8")
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=staged, commit_message=commit_message
            )
        except (HfHubHTTPError, OSError, ValueError) as err:
            raise OFAHubError(f"could not push {folder} to {repo_id!r}: {err}") from err
    return str(info.commit_url)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no copy of large weights) where the file system allows one, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def check_repo_id(repo_id: str) -> str:
    """``USER/REPO`` as the hub spells it; one clear line otherwise."""
    from .hub import is_hub_id

    if not is_hub_id(repo_id):
        raise OFAValueError(f"{repo_id!r} is not a hub repository id like 'USER/REPO'")
    return repo_id
