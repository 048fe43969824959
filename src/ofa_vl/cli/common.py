"""What the ``ofa`` commands share: the command registry, the decoding flags and the runtime flags
(each defined here once), ``KEY=VALUE`` items and image arguments."""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..arguments import Parser, add_dataclass_args, flag, from_args, given
from ..errors import OFAValueError

Handler = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(
    name: str, configure: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Handler], Handler]:
    """Register a sub-command: ``configure`` adds its arguments, the function runs it."""

    def wrap(fn: Handler) -> Handler:
        COMMANDS[name] = (configure, fn)
        return fn

    return wrap


def expand_images(args: Sequence[str]) -> list[str]:
    """Paths, directories (their images, sorted), globs and URLs -> a list of image sources."""
    from ..images import IMAGE_SUFFIXES

    out: list[str] = []
    for arg in args:
        p = Path(arg)
        if arg.startswith(("http://", "https://")) or p.is_file():
            out.append(arg)
        elif p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise OFAValueError(
                    f"{arg}: directory holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            out.extend(found)
        elif matches := sorted(glob.glob(arg)):
            out.extend(matches)
        else:
            raise OFAValueError(f"{arg}: no such image file, directory or pattern")
    return out


def key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` items as a dict, each value read as JSON when it parses."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise OFAValueError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(text)
        except ValueError:
            options[key.strip()] = text
    return options


# --------------------------------------------------------------------------- decoding
# GenerationConfig's own fields; the model's defaults apply when a flag is absent
DECODING_FLAGS = {
    "num_beams": ["--num-beams", "--beams"],
    "max_new_tokens": ["--max-new-tokens"],
    "num_return_sequences": ["--n-best"],
}
DECODING_HELP = {
    "num_beams": "beam size",
    "max_new_tokens": "length limit",
    "num_return_sequences": "also the K best beams (K <= beams), best first",
}


def decoding_args(p: Parser, *, n_best: bool = False) -> None:
    """The decoding flags :func:`decoding` reads (``--n-best``: the inference commands')."""
    from ..generation.config import GenerationConfig

    names = [k for k in DECODING_FLAGS if n_best or k != "num_return_sequences"]
    add_dataclass_args(
        p, GenerationConfig, only=names, names=DECODING_FLAGS, helps=DECODING_HELP,
        defaults=dict.fromkeys(names, "the model's"),
    )  # fmt: skip
    p.add_argument(
        "--decoding", action="append", default=[], metavar="KEY=VALUE",
        help="a decoding option (ofa_vl.generation.GenerationConfig), e.g. length_penalty=0.7; "
        "the value is read as JSON when it parses",
    )  # fmt: skip


def decoding(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding overrides given (0 and negatives included: the library refuses them); an
    unknown ``--decoding`` key is one line naming the valid ones."""
    from ..generation.config import GenerationConfig, unknown_options

    options = key_values(args.decoding, "--decoding")
    if error := unknown_options(options):
        raise error
    return {**options, **given(GenerationConfig, args)}


# --------------------------------------------------------------------------- runtime
@dataclass(frozen=True)
class Runtime:
    """How a command runs the network: ``get_model``'s precision, compile and backend."""

    # ofa_vl.model.precision.PRECISIONS and ofa_vl.api.BACKENDS, written out so that --help does
    # not import torch
    precision: Literal["fp32", "bf16", "int8", "int8-legacy"] = flag(
        "fp32",
        "bf16: weights cast (stream, logits fp32); int8: the output projection int8, the rest "
        "fp32; int8-legacy: every Linear int8 (CPU; fastest, changes near-tie answers)",
    )
    compile: bool = flag(False, "decode with a torch.compile'd step (compiling takes tens of "
                         "seconds once)")  # fmt: skip
    backend: Literal["torch", "onnxruntime"] = flag(
        "torch", "onnxruntime: run a folder written by `ofa export --format onnx`"
    )


def runtime_args(p: Parser, *only: str) -> None:
    """The runtime flags (``only`` these: a command may take some of them)."""
    add_dataclass_args(p, Runtime, only=only or None)


def runtime(args: argparse.Namespace, *only: str) -> dict[str, Any]:
    """The ``get_model`` options of the runtime flags (``only`` those a command takes)."""
    values = dataclasses.asdict(from_args(Runtime, args))
    return {k: v for k, v in values.items() if not only or k in only}
