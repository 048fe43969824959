"""model/linear.py: each fast path gives F.linear's numbers and steps aside where it cannot."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ofa_vl.model import linear as linear_module
from ofa_vl.model.linear import PACKED, linear, onednn_packs, packed_linear


def bf16_layer(bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(64, 48, bias=bias).to(torch.bfloat16)


@pytest.mark.parametrize("grad", [False, True])  # packed (where oneDNN is) / weight-stationary
def test_fp32_few_rows_match_f_linear_to_round_off(grad: bool) -> None:
    layer = nn.Linear(64, 48)
    for shape in [(1, 64), (2, 5, 64), (40, 64), (300, 64)]:
        x = torch.randn(shape)
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(linear(layer, x), F.linear(x, layer.weight, layer.bias))


def test_bf16_linear_equals_f_linear_at_any_row_count() -> None:
    layer = bf16_layer()
    with torch.no_grad():
        for shape in [(1, 64), (5, 64), (3, 40, 64), (900, 64)]:
            x = torch.randn(shape, dtype=torch.bfloat16)
            assert torch.equal(linear(layer, x), F.linear(x, layer.weight, layer.bias))
    no_bias = bf16_layer(bias=False)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(linear(no_bias, x), F.linear(x, no_bias.weight))


def test_packed_weight_is_made_once_and_remade_when_the_weight_changes() -> None:
    layer = bf16_layer()
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        first = packed_linear(layer, x)
        if not onednn_packs(torch.bfloat16):  # no oneDNN bf16 kernels here: F.linear
            assert first is None and layer not in PACKED
            return
        packed = PACKED[layer][1]
        packed_linear(layer, x)
        assert PACKED[layer][1] is packed  # reused
        copy.deepcopy(layer)  # the packed copy (opaque to deepcopy and pickle) is not in it
        layer.weight.mul_(2)  # in place (an optimizer step, load_state_dict): a new version
        assert torch.equal(packed_linear(layer, x), F.linear(x, layer.weight, layer.bias))
        assert PACKED[layer][1] is not packed
        layer.weight = nn.Parameter(torch.randn_like(layer.weight))  # a new tensor
        assert torch.equal(packed_linear(layer, x), F.linear(x, layer.weight, layer.bias))


def test_packed_path_steps_aside_for_gradients_and_other_dtypes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer = bf16_layer()
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    assert packed_linear(layer, x) is None  # gradients recorded: the packed op has no backward
    linear(layer, x).float().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert packed_linear(layer, x.float()) is None  # an input of another dtype
        monkeypatch.setattr(linear_module, "PREPACK", False)  # OFA_VL_PREPACK=0
        fp32 = nn.Linear(64, 48)
        assert packed_linear(fp32, x.float()) is None and fp32 not in PACKED
