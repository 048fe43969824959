"""The 3-stage ResNet that turns an image into OFA's patch features.

OFA:models/ofa/resnet.py and mmpretrain's ``OFAResNet``: a torchvision-style Bottleneck ResNet
(stride on the 3x3 conv) with the stem and ``layer1..layer3`` only, so a ``(B, 3, H, W)`` image
becomes ``(B, 16 * width, H / 16, W / 16)`` features (1024 channels for the standard width 64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability ``p``."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


def linear_rates(rate: float, n: int) -> list[float]:
    """Drop-path rates rising linearly from 0 to ``rate`` over ``n`` blocks (timm/OFA)."""
    return [rate * i / max(n - 1, 1) for i in range(n)]


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, drop_path_rate: float = 0.0):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        self.drop_path_rate = drop_path_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(identity + drop_path(y, self.drop_path_rate, self.training))


class ResNet3(nn.Module):
    """Stem + three Bottleneck stages (strides 1, 2, 2)."""

    def __init__(self, blocks: tuple[int, ...], width: int = 64, drop_path_rate: float = 0.0):
        super().__init__()
        if len(blocks) != 3:
            raise ValueError(f"OFA's ResNet has 3 stages, got block counts {blocks}")
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        rates = linear_rates(drop_path_rate, sum(blocks))
        inplanes, k = width, 0
        stages = []
        for i, (n, stride) in enumerate(zip(blocks, (1, 2, 2))):
            planes = width * 2**i
            layer = []
            for j in range(n):
                layer.append(Bottleneck(inplanes, planes, stride if j == 0 else 1, rates[k]))
                inplanes, k = planes * Bottleneck.expansion, k + 1
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3 = stages
        self.out_channels = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and not torch.compiler.is_exporting():
            # oneDNN's convolutions run NHWC without reordering every activation: the stages
            # 1.2x (fp32) / 1.35x (bf16) faster on an AVX-512 CPU (benchmarks/README.md). Always a
            # fresh NHWC copy: a view that only looks NHWC (one HWC image as a batch) passes
            # contiguous() as it is, yet convolves as NCHW, with other round-off than its copy
            x = torch.empty_like(x, memory_format=torch.channels_last).copy_(x)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))
