"""What a run starts from: the data (a folder or the mmpretrain layout), the model, its tokenizer
and the tasks that build the examples with the model's own input pipeline (prompts, text
normalisation, image size and interpolation), so that training and inference see the same."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..api import get_model
from ..checkpoints import load_model
from ..config import PRESETS, OFAConfig
from ..data.common import DatasetError
from ..data.folder import FolderData, is_folder_dataset, read_folder, training_examples
from ..data.training import MIXTURES, Example, build_word_tokenizer, example_texts, load_examples
from ..distributed import Dist
from ..errors import OFAValueError
from ..model import OFA
from ..model_folder import ModelFolder
from ..options import check_image_size
from ..preprocess import PreprocessConfig
from ..tasks import TASKS, Task, get_task
from ..tokenizer import OFATokenizer
from ..zoo import MODELS
from .config import TrainConfig
from .objective import repeat_tasks

TaskFactory = Callable[..., Task]  # task name (+ options) -> the model's task


@dataclass
class Start:
    """The model a run trains and how it reads its data."""

    model: OFA
    tokenizer: OFATokenizer
    preprocessing: PreprocessConfig  # the main task's: size, resize, mean / std (as inference)
    tasks: TaskFactory
    examples: list[Example]
    init_file: Path | None  # the weights it started from (None when resumed)


def task_factory(init: str, images: Mapping[str, Any] | None = None) -> TaskFactory:
    """The tasks of the model ``init`` names (its card's options for its own task, its folder's
    ``pipeline.json``), with the image preprocessing ``images`` sets (``image_size``,
    ``interpolation``, ``mean``, ``std``: None keeps the task's); a preset's are the defaults."""
    card = MODELS.get(init)
    folder_options = {} if init in PRESETS else ModelFolder.find(card, init).preprocessing.values()
    given = {k: v for k, v in (images or {}).items() if v is not None}

    def make(name: str, **extra: Any) -> Task:
        own = card is not None and name == card.task
        opts = {**card.task_options, **card.preprocessing.values()} if card and own else {}
        opts.pop("answers_url", None)  # a folder's answers are what is learned, not VQAv2's list
        opts.update(folder_options)
        return get_task(name, **(opts | given | extra))

    return make


def run_settings(pre: PreprocessConfig) -> ModelFolder:
    """A run's ``pipeline.json``: its image preprocessing (the tasks keep their own text
    normalisation and decoding)."""
    return ModelFolder.describing(None, pre, text=False)


def read_data(cfg: TrainConfig, ddp: Dist) -> FolderData | None:
    """A folder dataset (its skipped lines reported by rank 0), or None for the mmpretrain layout."""
    if not is_folder_dataset(cfg.data):
        if cfg.task is None:
            raise OFAValueError(f"{cfg.data}: not a folder dataset (no metadata file); give --task")
        return None
    data = read_folder(cfg.data, None if cfg.task in MIXTURES else cfg.task, cfg.strict)
    if ddp.main:
        data.report()
    if "train" not in data.splits:
        raise DatasetError(f"{cfg.data}: no train lines (its splits: {', '.join(data.splits)})")
    return data


def main_task(cfg: TrainConfig, folder: FolderData | None) -> str:
    """The task whose preprocessing the run uses (caption for mixtures, as OFA's pretraining)."""
    names = folder.tasks if folder is not None else [str(cfg.task)]
    return names[0] if len(names) == 1 and names[0] in TASKS else "caption"


def load_examples_for(
    cfg: TrainConfig, folder: FolderData | None, tasks: TaskFactory
) -> list[Example]:
    """The training examples, built with ``tasks``, mixture repetitions applied."""
    if folder is not None:
        examples = training_examples(folder.select("train"), tasks)
    else:
        examples = load_examples(cfg.data, str(cfg.task))
    return repeat_tasks(examples, cfg.repeat)


def build(cfg: TrainConfig, folder: FolderData | None, resume_from: Path | None) -> Start:
    """The model to train (fresh from ``--init`` or from the checkpoint resumed) and its data."""
    main = main_task(cfg, folder)
    if resume_from is not None:
        images = (ModelFolder.read(cfg.out) or ModelFolder()).preprocessing.values()
    else:  # the main task's preprocessing, for every task of the run
        given = {"image_size": cfg.image_size, "interpolation": cfg.interpolation}
        images = run_settings(
            task_factory(cfg.init, given)(main).preprocessing
        ).preprocessing.values()
    tasks = task_factory(cfg.init, images)
    preprocessing = tasks(main).preprocessing
    examples = load_examples_for(cfg, folder, tasks)
    if resume_from is not None and not cfg.lora_rank:
        model, init_file = load_model(resume_from), None
    else:
        model, tok = _initial(cfg, folder, examples, main)
        init_file = model.weights_file
        model = _with_dropout(model, cfg)
        if cfg.lora_rank:  # the base weights are the init's; the adapter is trained (or resumed)
            model = _with_lora(model, cfg, resume_from)
    if resume_from is not None:
        tok, init_file = OFATokenizer.from_pretrained(cfg.out), None
    check_image_size(preprocessing.image_size, model.cfg)
    if cfg.activation_checkpointing:
        model.set_gradient_checkpointing(True)
    return Start(model, tok, preprocessing, tasks, examples, init_file)


def _initial(
    cfg: TrainConfig, folder: FolderData | None, examples: list[Example], main: str
) -> tuple[OFA, OFATokenizer]:
    """``--init``: a fresh preset model (seeded) or the named / saved model, and its tokenizer."""
    if cfg.init in PRESETS:
        tok = _preset_tokenizer(cfg, folder, examples)
        torch.manual_seed(cfg.seed)
        model = OFA(OFAConfig.from_preset(cfg.init, vocab_size=len(tok)))
        model.init_weights(tok.bin_offset, tok.num_bins)
        return model, tok
    pipe = get_model(cfg.init, task=main, tokenizer=cfg.tokenizer)
    return pipe.model, pipe.tokenizer


def _with_lora(model: OFA, cfg: TrainConfig, resume_from: Path | None) -> OFA:
    from ..lora import LoraOptions, add_lora, load_adapter

    if resume_from is not None:
        return load_adapter(model, resume_from)
    options = LoraOptions(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, tuple(cfg.lora_targets))
    return add_lora(model, options)


def _preset_tokenizer(
    cfg: TrainConfig, folder: FolderData | None, examples: list[Example]
) -> OFATokenizer:
    if cfg.tokenizer is not None:
        return OFATokenizer.from_pretrained(cfg.tokenizer)
    # a vocabulary of every task's texts, so one model can learn them all
    mixture = folder is not None or cfg.task == "multitask"
    corpus = examples if mixture else load_examples(cfg.data, "multitask")
    return build_word_tokenizer(example_texts(corpus), num_bins=cfg.num_bins)


def _with_dropout(model: OFA, cfg: TrainConfig) -> OFA:
    """The model rebuilt with the run's dropout and drop-path rates (fixed when layers are built)."""
    new = dataclasses.replace(
        model.cfg,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.dropout,
        encoder_drop_path_rate=cfg.drop_path,
        decoder_drop_path_rate=cfg.drop_path,
    )
    rebuilt = OFA(new)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.weights_file = model.weights_file
    return rebuilt
