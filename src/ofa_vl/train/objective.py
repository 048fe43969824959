"""The objective and the data order: label-smoothed loss, learning-rate schedule, the step
sampler, EMA and mixture repetition (OFA's recipe, OFA-NOTES 2.6)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from ..data.training import IGNORE_INDEX, Example
from ..errors import OFAValueError
from ..model import OFA


def label_smoothed_loss(
    logits: torch.Tensor, labels: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, int]:
    """Summed label-smoothed NLL over positions whose label is not :data:`IGNORE_INDEX`.

    Returns ``(loss_sum, n_tokens)``. ``OFA:criterions/label_smoothed_cross_entropy.py``
    (fairseq): ``eps_i = eps / (V - 1)``, ``loss = (1 - eps - eps_i) * nll + eps_i * sum(-logp)``.
    """
    keep = labels.ne(IGNORE_INDEX)
    lprobs = F.log_softmax(logits[keep].float(), dim=-1)  # (N, V)
    target = labels[keep].unsqueeze(-1)
    nll = -lprobs.gather(-1, target).squeeze(-1)
    smooth = -lprobs.sum(-1)
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return loss.sum(), int(keep.sum())


def lr_lambda(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 then linear decay to 0 (fairseq ``polynomial_decay``, power 1)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


# --------------------------------------------------------------------------- data order
class StepSampler(Sampler[list[int]]):
    """Yields this rank's micro-batches of every optimizer step from ``start_step`` on."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        accum: int,
        rank: int,
        world: int,
        seed: int,
        start_step: int,
        total_steps: int,
    ) -> None:
        self.n, self.batch_size, self.accum = n, batch_size, accum
        self.rank, self.world, self.seed = rank, world, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.global_batch = batch_size * world * accum
        self.steps_per_epoch = n // self.global_batch
        if self.steps_per_epoch == 0:
            raise OFAValueError(
                f"{n} examples are fewer than one global batch ({batch_size} x {world} ranks x "
                f"{accum} accumulation steps)"
            )

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The example order of one epoch: a function of (seed, epoch) only."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.accum

    def __iter__(self) -> Iterator[list[int]]:
        order, order_epoch = torch.empty(0, dtype=torch.long), -1
        for step in range(self.start_step, self.total_steps):
            epoch, pos = divmod(step, self.steps_per_epoch)
            if epoch != order_epoch:
                order, order_epoch = self.epoch_order(epoch), epoch
            base = pos * self.global_batch
            for a in range(self.accum):
                start = base + (a * self.world + self.rank) * self.batch_size
                yield order[start : start + self.batch_size].tolist()


def repeat_tasks(examples: list[Example], specs: Sequence[str]) -> list[Example]:
    """Mixture weights as repetition: ``refcoco=2`` puts every grounding example in twice."""
    out = list(examples)
    for spec in specs:
        name, _, times = spec.partition("=")
        if not times.isdigit() or int(times) < 1 or not any(e.task == name for e in examples):
            raise OFAValueError(
                f"--repeat {spec!r}: expected TASK=N with a task of the data, N >= 1"
            )
        out += [e for e in examples if e.task == name] * (int(times) - 1)
    return out


def set_train_mode(model: OFA, freeze_resnet: bool) -> None:
    model.train()
    if freeze_resnet:  # a frozen ResNet keeps its BatchNorm statistics too
        model.encoder.embed_images.eval()


class EMA:
    """Exponential moving average of every floating-point tensor of the state dict."""

    def __init__(self, model: OFA, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: OFA) -> None:
        src = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                v.lerp_(src[k], 1.0 - self.decay)
            else:
                v.copy_(src[k])
