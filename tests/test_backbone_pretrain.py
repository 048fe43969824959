"""Backbone pretraining on per-patch labels (``ofa train --backbone-steps``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ofa_vl.model.resnet import ResNet3
from ofa_vl.shapes.text import COLOURS, SHAPES, SIZES
from ofa_vl.shapes.world import write_shapes_dataset
from ofa_vl.train.backbone import patch_labels, pretrain_backbone

# tier: the whole module runs processes or trains (pyproject markers)
pytestmark = [pytest.mark.slow]


def _obj(box: list[int], colour: str = "red", shape: str = "circle", size: str = "large") -> dict:
    return {"box": box, "colour": colour, "shape": shape, "size": size}


def test_patch_labels_cover_owner_and_offsets() -> None:
    # 64 px image, 4 x 4 grid of 16 px cells
    square = _obj([0, 0, 32, 32], "blue", "square", "large")
    sliver = _obj([40, 0, 50, 16], "green", "triangle", "small")  # 50 % of (0, 2), 12 % of (0, 3)
    edge = _obj([61, 48, 64, 64], "yellow", "circle", "small")  # 3 x 16 of cell (3, 3): 19 %
    classes, offsets, mask = patch_labels([square, sliver, edge], 64, 4)
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = expected[0, 2] = True
    assert (mask == expected).all()
    blue = [COLOURS.index("blue") + 1, SHAPES.index("square") + 1, SIZES.index("large") + 1]
    assert classes[1, 1].tolist() == blue and classes[3, 3].tolist() == [0, 0, 0]
    assert classes[0, 2, 0] == COLOURS.index("green") + 1
    # box relative to the cell centre (24, 24), in image sides
    np.testing.assert_allclose(offsets[1, 1] * 64, [-24, -24, 8, 8])


def test_patch_labels_pick_the_larger_cover() -> None:
    left = _obj([0, 0, 10, 16], "red")  # 10 x 16 of cell (0, 0)
    right = _obj([10, 0, 30, 16], "purple")  # 6 x 16 of it
    classes, _, _ = patch_labels([left, right], 64, 4)
    assert classes[0, 0, 0] == COLOURS.index("red") + 1
    assert classes[0, 1, 0] == COLOURS.index("purple") + 1


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    write_shapes_dataset(root, 16, 0, seed=3, size=64)
    return root


def test_pretraining_learns_the_patch_labels(scenes: Path) -> None:
    torch.manual_seed(0)
    resnet = ResNet3((1, 1, 1), 8)
    before = [p.detach().clone() for p in resnet.parameters()]
    history = pretrain_backbone(resnet, scenes, steps=60, image_size=64, batch_size=16, lr=1e-2)
    assert len(history) == 60
    first, last = history[0], np.mean([h["loss"] for h in history[-5:]])
    assert last < 0.5 * first["loss"], (first, last)
    assert any(not torch.equal(a, b) for a, b in zip(before, resnet.parameters()))
