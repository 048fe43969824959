"""What one decoding step costs without timing it: bytes of weights read and kernels launched.

Both are properties of the code, not of the CPU, so they can be measured on any machine, and each
speed idea for the bandwidth-bound batch-1 step must lower one of them (issue #30). Counted with a
``TorchDispatchMode`` over one ``Decoder.step`` (the search's own ops between steps are not in it):

- **launches**: ops that compute something: not views, not ops that hand back their input
  (``.to`` to the same dtype, dropout in eval); in-place ops count.
- **weight bytes**: the bytes of every parameter or buffer an op reads (a torchao tensor's inner
  tensors; an int8-legacy op's packed int8 weight), of the rows an embedding or gather reads, and
  of any weight-sized copy made from a weight within the step (a dequantized int8 weight is read
  again by its matmul: counted, since it is real traffic).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

GATHERS = ("aten.embedding.", "aten.index_select.", "aten.gather.", "aten.index.")


def inner_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors holding ``t``'s data (a tensor subclass's flattened components)."""
    if type(t) in (torch.Tensor, nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        return [t]
    names, _ = t.__tensor_flatten__()
    return [x for n in names for x in inner_tensors(getattr(t, n))]


def _storage(t: torch.Tensor) -> int:
    return -id(t) if t.is_mkldnn else t.untyped_storage().data_ptr()  # opaque: no storage


@dataclass
class StepCost:
    launches: int
    weight_bytes: int
    ops: dict[str, int]  # launches by op name


class _Counter(TorchDispatchMode):
    def __init__(self, model: nn.Module):
        super().__init__()
        tensors = [*model.parameters(), *model.buffers()]
        self.weights = {_storage(x) for t in tensors for x in inner_tensors(t)}
        self.copies: dict[int, weakref.ref] = {}  # storage -> weight-sized copy made in the step
        self.launches = self.weight_bytes = 0
        self.ops: dict[str, int] = {}

    def _is_weight(self, x: torch.Tensor) -> bool:
        copy = self.copies.get(_storage(x))
        return _storage(x) in self.weights or (copy is not None and copy() is not None)

    def _read(self, a: Any) -> tuple[int, int]:
        """(bytes, elements) of weights that argument ``a`` is or holds."""
        if isinstance(a, torch.Tensor) and a.is_mkldnn:  # oneDNN's prepacked weight (linear.py)
            return a.numel() * a.element_size(), a.numel()
        if isinstance(a, torch.Tensor):
            parts = [x for x in inner_tensors(a) if self._is_weight(x)]
            return sum(x.untyped_storage().nbytes() for x in parts), sum(x.numel() for x in parts)
        if isinstance(a, torch.ScriptObject) and hasattr(a, "unpack"):  # int8-legacy packed
            w, b = torch.ops.quantized.linear_unpack(a)
            return w.int_repr().nbytes + (0 if b is None else b.nbytes), w.numel()
        return 0, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        ins = [a for a in tree_leaves((args, kwargs))]
        outs = [o for o in tree_leaves(out) if isinstance(o, torch.Tensor)]
        stores = {_storage(x) for a in ins if isinstance(a, torch.Tensor) for x in inner_tensors(a)}
        if not func._schema.is_mutable and outs and all(_storage(o) in stores for o in outs):
            return out  # a view, or the input handed back: no kernel
        name = str(func)
        self.launches += 1
        self.ops[name] = self.ops.get(name, 0) + 1
        read = [self._read(a) for a in ins]
        nbytes, numel = sum(r[0] for r in read), sum(r[1] for r in read)
        if nbytes and name.startswith(GATHERS):
            nbytes = sum(o.nbytes for o in outs)  # only the rows gathered
        elif nbytes and outs and outs[0].numel() >= numel:  # a weight-sized copy (dequantized)
            self.copies[_storage(outs[0])] = weakref.ref(outs[0])
        self.weight_bytes += nbytes
        return out


def count(model: nn.Module, fn: Any, *args: Any, **kwargs: Any) -> tuple[StepCost, Any]:
    """Run ``fn(*args, **kwargs)`` and count what it costs against ``model``'s weights."""
    counter = _Counter(model)
    with counter:
        out = fn(*args, **kwargs)
    return StepCost(counter.launches, counter.weight_bytes, counter.ops), out


@torch.inference_mode()
def decoding_step_cost(
    model: Any, images: torch.Tensor, ids: torch.Tensor, beams: int, max_len: int = 21
) -> StepCost:
    """The cost of one cached decoding step of ``beams`` rows per image (the second step: the
    first feeds ``<s>`` like every other, but warms any lazily built state)."""
    enc = model.encode(ids, images)
    state = model.decoder.init_state(enc, beams, max_len)
    tokens = torch.full((ids.shape[0] * beams, 1), model.cfg.bos_token_id, dtype=torch.long)
    model.decoder.step(tokens, state)
    cost, _ = count(model, model.decoder.step, tokens, state)
    return cost
