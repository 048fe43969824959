"""A run's files: ``checkpoints/step_N`` (weights + train state), the model folder's weights, the
best validated weights in ``best/``, and ``settings.json`` (the options a resume must repeat).

Each folder is written under a temporary name and renamed: it appears complete or not at all.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist

from ..distributed import Dist
from ..errors import OFAValueError
from ..model import OFA
from ..model_folder import ModelFolder, write_weights
from ..runs import weights_fingerprint, write_atomic
from ..tokenizer import OFATokenizer
from .objective import EMA

CHECKPOINTS = "checkpoints"
STATE_FILE = "train_state.pt"
SETTINGS_FILE = "settings.json"
BEST = "best"  # OUT/best: the weights of the best validation, a model folder
BEST_FILE = "validation.json"  # in OUT/best: its step, metric and value
KEEP_CHECKPOINTS = 2


def rng_state() -> dict[str, Any]:
    """Torch, CUDA, numpy and python RNG states as plain tensors / containers (weights_only)."""
    name, keys, pos, has_gauss, cached = cast(tuple[Any, ...], np.random.get_state())
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [py_version, list(py_state), py_gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete ``OUT/checkpoints/step_*`` folder."""
    folder = out / CHECKPOINTS
    done = sorted(folder.glob("step_*[0-9]")) if folder.is_dir() else []
    return done[-1] if done else None


def _atomic_dir(final: Path) -> Path:
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def save_checkpoint(
    out: Path,
    step: int,
    model: OFA,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: EMA | None,
    ddp: Dist,
    extra: dict[str, Any],
) -> None:
    """Write ``checkpoints/step_N`` (weights + train state + ``extra``) and the model folder's
    weights. Every rank's RNG state is gathered so a resume with the same world size is exact."""
    rng: list[Any] = [None] * ddp.world
    if ddp.world > 1:
        dist.all_gather_object(rng, rng_state())
    else:
        rng = [rng_state()]
    if not ddp.main:
        return
    final = out / CHECKPOINTS / f"step_{step:07d}"
    tmp = _atomic_dir(final)
    write_weights(model, tmp)
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ema": ema.model.state_dict() if ema is not None else {},
        "rng": rng,
        **extra,
    }
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_weights(ema.model if ema is not None else model, out)
    for old in sorted((out / CHECKPOINTS).glob("step_*[0-9]"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The train state of a checkpoint folder (safe loading: tensors and containers only)."""
    return cast(
        dict[str, Any],
        torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True),
    )


def save_best(out: Path, model: OFA, tokenizer: OFATokenizer, record: dict[str, Any]) -> Path:
    """``OUT/best/``: a model folder of the weights that scored ``record`` (step, metric, value)."""
    final = out / BEST
    tmp = _atomic_dir(final)
    (ModelFolder.read(out) or ModelFolder()).write(tmp, model, tokenizer)  # the run's settings
    (tmp / BEST_FILE).write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def check_settings(
    out: Path, settings: dict[str, Any], init_file: Path | None, resuming: bool
) -> None:
    """Record the run's options (and its init weights' fingerprint); a resume must match them."""
    path = out / SETTINGS_FILE
    want = json.loads(json.dumps(settings))
    if resuming and path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        old.pop("init_weights", None)
        diff = {k: (old.get(k), v) for k, v in want.items() if old.get(k) != v}
        if diff:
            raise OFAValueError(
                f"{out}: its checkpoints were trained with other options {diff} (old, new); "
                "resume with the same options or train into another --out"
            )
        return
    if init_file is not None:
        want["init_weights"] = weights_fingerprint(init_file)
    write_atomic(path, json.dumps(want, indent=2) + "\n")
