"""The golden-fixture OFA checkpoint, rebuilt from a seed instead of stored (53 MB).

Architecture (mmpretrain layout, as ``tools/model_converters/ofa.py`` writes it): embedding_dim
64, 2 encoder + 2 decoder layers, 4 heads, OFAResNet-50 (3 stages), vocab 59457, shared input and
output embedding, the ``token_rp_bucket`` / ``image_rp_bucket`` buffers left out (recomputable).

``goldens/ofa-test_seed0.spec.pt`` (small) holds the key list with shapes and dtypes, the few
tensors that cannot be regenerated portably (BatchNorm running statistics calibrated on the test
images in the reference, the ``image_position_idx`` buffer) and the sha256 of the whole state
dict. Every other tensor comes from its own ``torch.Generator`` seeded by (seed, key), so each
parameter is non-trivial: LayerNorm/BatchNorm affine, relative-position tables, head scales.
A torch whose generator changed fails :func:`build` with one line instead of silently moving
every golden. Torch only: the reference virtualenv (``scripts/goldens/``) imports it too.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from pathlib import Path

import torch

SPEC = Path(__file__).resolve().parent / "goldens" / "ofa-test_seed0.spec.pt"
SEED = 0
TIED = ("model.decoder.embed_tokens.weight", "model.decoder.output_projection.weight")
EMBED = "model.encoder.embed_tokens.weight"  # the one tensor behind TIED too
# <bin_0..999> rows scaled up so that random weights still answer boxes (4 bins in a row) in the
# grounding goldens; without it a bin wins a step with probability ~1/60 and no box ever forms.
BINS = slice(58457, 59457)
BIN_SCALE = 2.0
STORED = ("running_mean", "running_var", "num_batches_tracked", "image_position_idx")


class GoldenWeightsError(RuntimeError):
    """The rebuilt checkpoint is not the one the goldens were made with."""


def is_stored(key: str) -> bool:
    """Tensors kept in the spec file rather than regenerated."""
    return key.rsplit(".", 1)[-1] in STORED


def _generator(seed: int, key: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}/{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def random_tensor(key: str, shape: tuple[int, ...], shapes: dict[str, tuple[int, ...]], seed: int):
    """The regenerated value of ``key`` (float32), from its own generator."""
    g = _generator(seed, key)
    randn = torch.randn(shape, generator=g)
    uniform = torch.rand(shape, generator=g) * 2 - 1  # U(-1, 1)
    name = key.rsplit(".", 1)[-1]
    module = key.rsplit(".", 1)[0]
    if "rel_pos_table" in key:
        return 0.3 * randn
    if name == "c_attn":  # per-head scale (normformer scale_heads)
        return 1 + 0.1 * randn
    if "embed" in module and len(shape) == 2:  # token, position, image-position, type tables
        return randn
    if len(shape) == 4:  # conv: kaiming normal, fan_out (torchvision's ResNet init)
        return randn * math.sqrt(2 / (shape[0] * shape[2] * shape[3]))
    if len(shape) == 2 and "attn." in key:  # q/k/v/out: 4x sharper attention, so that the
        return 4 * uniform / math.sqrt(shape[1])  # outputs depend on the prompt and the image
    if len(shape) == 2:  # linear: torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        return uniform / math.sqrt(shape[1])
    weight = shapes.get(module + ".weight", ())
    if name == "bias" and len(weight) == 2:  # linear bias: same bound as its weight
        return uniform / math.sqrt(weight[1])
    if name == "weight":  # LayerNorm / BatchNorm scale
        return 1 + 0.1 * randn
    if name == "bias":  # LayerNorm / BatchNorm shift
        return 0.1 * randn
    raise ValueError(f"no init rule for {key} {shape}")


def generate(keys: list[tuple[str, list[int], str]], stored: dict[str, torch.Tensor], seed: int):
    """The state dict from the key list, the stored tensors and the seed."""
    shapes = {k: tuple(s) for k, s, _ in keys}
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, shape, dtype in keys:
        if key in TIED:
            sd[key] = sd[EMBED]  # one tensor, as in the released files
        elif is_stored(key):
            sd[key] = stored[key]
        else:
            t = random_tensor(key, tuple(shape), shapes, seed)
            if key == EMBED:
                t[BINS] *= BIN_SCALE
            sd[key] = t.to(getattr(torch, dtype))
    return sd


def digest(sd: dict[str, torch.Tensor]) -> str:
    """sha256 over every key, dtype, shape and the tensor bytes, in order."""
    h = hashlib.sha256()
    for key, t in sd.items():
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def build(spec_path: Path = SPEC) -> OrderedDict[str, torch.Tensor]:
    """The fixture state dict, checked against the sha256 recorded in the spec."""
    spec = torch.load(spec_path, weights_only=True)
    sd = generate(spec["keys"], spec["stored"], spec["seed"])
    got = digest(sd)
    if got != spec["sha256"]:
        raise GoldenWeightsError(
            f"the golden checkpoint rebuilt from {spec_path.name} has sha256 {got[:16]}, "
            f"not the recorded {spec['sha256'][:16]} (torch {torch.__version__}'s random "
            "generator or the init rules changed); regenerate with scripts/goldens/make_goldens.py"
        )
    return sd


def write_checkpoint(path: Path, spec_path: Path = SPEC) -> Path:
    """Write the rebuilt checkpoint to ``path`` (a cache: kept when its recorded digest matches)."""
    spec_digest = torch.load(spec_path, weights_only=True)["sha256"]
    stamp = path.with_name(path.name + ".sha256")
    if path.is_file() and stamp.is_file() and stamp.read_text() == spec_digest:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(build(spec_path), tmp)
    os.replace(tmp, path)  # atomic: concurrent sessions never read half a file
    stamp.write_text(spec_digest)
    return path
