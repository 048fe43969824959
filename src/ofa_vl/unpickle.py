"""The one restricted unpickler: pickles are read without importing anything that can run code.

Two policies of one class. ``data`` (dataset pickles: REFER refs, answer vocabularies) builds plain
containers, str, int, float, bool and None only: every :meth:`find_class` is refused before the
lookup. ``checkpoint`` (fairseq ``.pt``, Lightning ``.ckpt``) also rebuilds tensors and turns the
configuration objects a training run pickles beside its weights into inert placeholders.
"""

from __future__ import annotations

import pickle
import types
import zipfile
from pathlib import Path
from typing import IO, Any, Literal

import torch

from .errors import OFAValueError

Policy = Literal["data", "checkpoint"]


class UnpickleError(OFAValueError):
    """A pickle that would import something it may not, or that cannot be read."""


_TENSOR_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch.storage", "UntypedStorage"),
    ("torch.storage", "TypedStorage"),
    ("_codecs", "encode"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
}
# Objects a training run pickles beside its weights; they become inert placeholders.
_INERT_PACKAGES = {
    "omegaconf", "argparse", "fairseq", "numpy", "collections", "typing", "enum",
    "pathlib", "dataclasses", "datetime", "copyreg", "functools", "torch", "builtins",
    "pytorch_lightning", "lightning", "taming",
}  # fmt: skip
_CODE_NAMES = {"eval", "exec", "compile", "open", "getattr", "setattr", "__import__", "apply",
               "globals", "vars", "input", "breakpoint", "delattr", "print"}  # fmt: skip


class _Inert:
    """Stands in for any non-tensor object of a checkpoint: stores its arguments, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:  # dict-like objects
        self.kwargs[str(key)] = value

    def append(self, value: Any) -> None:  # list-like objects
        self.args += (value,)

    def extend(self, values: Any) -> None:
        self.args += tuple(values)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only what ``policy`` allows (see the module docstring)."""

    policy: Policy = "data"

    def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
        # utf-8 decodes the byte strings of Python 2 pickles (the REFER refs files) to str
        kwargs.setdefault("encoding", "utf-8")
        super().__init__(file, **kwargs)

    def find_class(self, module: str, name: str) -> Any:
        if self.policy == "checkpoint":
            if (module, name) in _TENSOR_GLOBALS or (
                module == "torch"
                and (
                    name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)
                )
            ):
                return super().find_class(module, name)
            if module.split(".")[0] in _INERT_PACKAGES and name not in _CODE_NAMES:
                return type(f"Inert[{module}.{name}]", (_Inert,), {})
            raise UnpickleError(
                f"refusing to load: the file would import {module}.{name}, which can run code; "
                "OFA checkpoints hold only tensors and configuration"
            )
        raise UnpickleError(
            f"refusing to unpickle {module}.{name}; only plain containers, str, "
            "int and float are allowed in data pickles"
        )


class _CheckpointUnpickler(RestrictedUnpickler):
    policy = "checkpoint"


# what torch.load takes as ``pickle_module``
_checkpoint_pickle = types.SimpleNamespace(
    Unpickler=_CheckpointUnpickler, load=lambda f, **kw: _CheckpointUnpickler(f, **kw).load(),
    __name__="ofa_vl_restricted_pickle",
)  # fmt: skip


def load_data_pickle(path: Path) -> Any:
    """A data pickle under the ``data`` policy; any failure is one :class:`UnpickleError` line."""
    with path.open("rb") as f:
        try:
            return RestrictedUnpickler(f).load()
        except UnpickleError as e:
            raise UnpickleError(f"{path}: {e}") from None
        except Exception as e:  # a corrupt pickle raises any of a dozen exception types
            raise UnpickleError(f"{path}: unreadable pickle ({e!r})") from None


def safe_torch_load(path: Path) -> Any:
    """``torch.load`` that never runs code: weights-only first, else the ``checkpoint`` policy."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # e.g. fairseq's OmegaConf config objects: retry with inert placeholders
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise UnpickleError(
            f"{path}: not a readable checkpoint (truncated or corrupt?): {e}"
        ) from e
    try:
        return torch.load(
            path, map_location="cpu", weights_only=False, pickle_module=_checkpoint_pickle
        )
    except UnpickleError as e:
        raise UnpickleError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise UnpickleError(f"{path}: not a readable checkpoint: {e}") from e
