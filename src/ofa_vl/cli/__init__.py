"""The ``ofa`` command: argument parsing only; the work is done by the library. One module per
command family (``infer``, ``hub``, ``data``, ``runs``, ``serve``); each registers its commands in
:data:`COMMANDS` (``common``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..allocator import keep_freed_memory
from ..errors import describe, is_user_error
from . import data, hub, infer, runs, serve
from .common import COMMANDS, expand_images

__all__ = ["COMMANDS", "build_parser", "expand_images", "main"]
_FAMILIES = (infer, hub, data, runs, serve)  # imported for their commands
ORDER = ("caption", "ground", "ocr", "vqa", "ask", "models", "push", "convert", "export", "data",
         "test", "predict", "serve", "train", "demo")  # fmt: skip  # as ``ofa --help`` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ofa", description="OFA vision-language models")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in sorted(COMMANDS, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        configure, fn = COMMANDS[name]
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip() or None)
        configure(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command: a user error (:mod:`ofa_vl.errors`) is one line and exit 2; a bug keeps
    its traceback."""
    keep_freed_memory()  # the command owns its process: large tensors are reused, not re-faulted
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a reader that left shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # `ofa models | head`: the reader has what it wanted, as `git log`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # exit's flush is quiet
        return 0
    except KeyboardInterrupt:
        print("ofa: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if not is_user_error(err) or args.debug or os.environ.get("OFA_VL_DEBUG"):
            raise
        print(f"ofa: error: {describe(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
