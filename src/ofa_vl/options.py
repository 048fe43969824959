"""Bounds on the options every entry point shares: the CLI, the Python API and the HTTP service.

Each check raises :class:`~ofa_vl.errors.OFAValueError` with one line naming the option, the value
and the allowed range. Bounds come from the model (positions, patch grid) and from the machine
(CPU cores, memory), not from the probe that found them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import OFAValueError

if TYPE_CHECKING:
    import torch

    from .config import OFAConfig

# What decoding may use of the device's memory: the rest is the model, activations, other requests.
MEMORY_FRACTION = 0.5
# Peak bytes per decoded pixel of load_image + preprocess (bilinear, the numpy cv2 resize): ~18
# measured on a 16 MP JPEG; rounded up.
BYTES_PER_PIXEL = 24
DECODE_BUDGET = 1 << 30  # bytes one image decode may take (a 44 MP image)
PATCH = 16  # the ResNet's stride: an S px image is an (S/16)^2 patch grid (OFA-NOTES 2.1)


def at_least(name: str, value: int | None, low: int = 1) -> int | None:
    """``value`` if it is None or ``>= low``, else one line naming ``name``."""
    if value is not None and value < low:
        raise OFAValueError(f"{name} must be at least {low}, got {value}")
    return value


RANGE_KEYS = ("ge", "gt", "le")  # pydantic's names for a declared numeric bound


def bounds_of(metadata: Mapping[str, Any]) -> dict[str, float]:
    """The numeric bounds (``ge``, ``gt``, ``le``) a field's metadata declares."""
    return {k: metadata[k] for k in RANGE_KEYS if k in metadata}


def check_range(
    name: str, value: Any, ge: float | None = None, gt: float | None = None, le: float | None = None
) -> None:
    """``value`` (None: not given) within the declared bounds, else one line naming the range."""
    if value is None or (ge is None and gt is None and le is None):
        return
    low_ok = (ge is None or value >= ge) and (gt is None or value > gt)
    if low_ok and (le is None or value <= le):
        return
    if le is None:
        rule = f"at least {ge}" if ge is not None else "positive" if gt == 0 else f"above {gt}"
    elif ge is None and gt is None:
        rule = f"at most {le}"
    else:
        rule = f"in [{ge}, {le}]" if ge is not None else f"in ({gt}, {le}]"
    raise OFAValueError(f"{name} must be {rule}, got {value}")


def check_counts(**values: int | None) -> None:
    """Every given count (``batch_size=8``, ``steps=100``, ...) is at least 1."""
    for name, value in values.items():
        at_least(name.replace("_", "-"), value)


def check_threads(threads: int | None) -> int | None:
    """CPU threads for torch: 1 .. the machine's cores (more crashes torch, helps nothing)."""
    cores = os.cpu_count() or 1
    if threads is not None and not 1 <= threads <= cores:
        raise OFAValueError(
            f"threads must be between 1 and {cores} (this machine's cores), got {threads}"
        )
    return threads


def check_ema(decay: float) -> float:
    """An EMA decay: 0 (off) up to, not including, 1 (a decay of 1 never learns)."""
    if not 0.0 <= decay < 1.0:
        raise OFAValueError(f"ema must be in [0, 1) (0 = off, e.g. 0.9999), got {decay}")
    return decay


def check_port(port: int) -> int:
    """A TCP port (0 = any free one)."""
    if not 0 <= port <= 65535:
        raise OFAValueError(f"port must be between 0 and 65535, got {port}")
    return port


def check_image_size(size: int | None, cfg: OFAConfig | None = None) -> int | None:
    """An input resolution: positive, and within the model's image position table."""
    at_least("image size", size, PATCH)
    if size is not None and cfg is not None and size > cfg.image_bucket_size * PATCH:
        raise OFAValueError(
            f"image size {size} is over the {cfg.image_bucket_size * PATCH} px this model's image "
            f"positions cover ({cfg.image_bucket_size}x{cfg.image_bucket_size} patches)"
        )
    return size


def check_device(device: str | torch.device | None) -> None:
    """A device that exists on this machine (``cuda`` needs a visible CUDA device)."""
    import torch

    if device is None:
        return
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise OFAValueError(
            f"device {str(device)!r} is not a device name (cpu, cuda, cuda:1, ...)"
        ) from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise OFAValueError(f"device {str(device)!r}: no CUDA device is available; use cpu")
        if dev.index is not None and dev.index >= count:
            raise OFAValueError(f"device {str(device)!r}: only {count} CUDA device(s) visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise OFAValueError(f"device {str(device)!r}: MPS is not available; use cpu")


CXX = ("g++", "c++", "clang++")  # inductor builds its CPU kernels with a C++ compiler at run time


def check_compile(
    compile: object, device: torch.device | None = None, precision: str = "fp32"
) -> bool:
    """``compile`` (a compiled decode step) is a bool, and when True, ``precision`` can be
    compiled and ``device`` can compile: a C++ compiler on the CPU, triton on a GPU."""
    import importlib.util
    import shutil

    if not isinstance(compile, bool):
        raise OFAValueError(f"compile must be True or False, got {compile!r}")
    if compile and precision == "int8-legacy":  # dynamo cannot trace its packed-weight ops
        raise OFAValueError("compile does not support int8-legacy; use int8, bf16 or fp32")
    if not compile or device is None:
        return compile
    if device.type == "cpu":
        if not any(c and shutil.which(c) for c in (os.environ.get("CXX"), *CXX)):
            raise OFAValueError(
                "compile on the CPU needs a C++ compiler (g++ or clang++) on PATH; run without it"
            )
    elif device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise OFAValueError("compile on a GPU needs triton (pip install triton); run without it")
    return compile


def device_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: the GPU's own, else the machine's RAM."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def max_image_pixels(budget: int = DECODE_BUDGET) -> int:
    """The largest image (width x height) whose decoding costs at most ``budget`` bytes."""
    return budget // BYTES_PER_PIXEL


def decode_cache_bytes(cfg: OFAConfig, source_len: int, max_len: int) -> int:
    """Bytes one beam of one input holds while decoding: every decoder layer's self- and
    cross-attention keys and values (float32), plus a row of log-probabilities and its copies."""
    kv = 2 * cfg.decoder_layers * (source_len + max_len) * cfg.embed_dim
    return 4 * (kv + 3 * cfg.vocab_size)


def check_decoding(
    options: Mapping[str, Any],
    cfg: OFAConfig,
    *,
    batch: int = 1,
    source_len: int = 0,
    device: torch.device | None = None,
) -> None:
    """Decoding options against the model and the machine (each option's own bounds are declared
    on :class:`~ofa_vl.generation.GenerationConfig`'s fields, which checks them when built).

    ``source_len`` is the encoder's length (text + image patches); with ``device``, the beams'
    caches (:func:`decode_cache_bytes`) of ``batch`` inputs must fit in a share of its memory.
    """
    beams = options.get("num_beams", 1)
    new = options.get("max_new_tokens")
    if new is not None and new >= cfg.max_positions:
        raise OFAValueError(
            f"max_new_tokens must be below the model's {cfg.max_positions} decoder positions, got {new}"
        )
    low = options.get("min_new_tokens")
    if low is not None and new is not None and low > new:
        raise OFAValueError(f"min_new_tokens ({low}) must not exceed max_new_tokens ({new})")
    if device is None or options.get("do_sample"):
        return
    per_beam = decode_cache_bytes(cfg, source_len, (new or cfg.max_positions) + 1)
    allowed = int(MEMORY_FRACTION * device_memory(device)) // (per_beam * max(batch, 1))
    if beams > allowed:
        raise OFAValueError(
            f"num_beams {beams} x {batch} input(s) needs about {beams * batch * per_beam / 2**30:.1f} "
            f"GiB of decoder cache; this device allows at most {max(allowed, 1)} beams here"
        )


def check_source_length(n_tokens: int, cfg: OFAConfig) -> None:
    """An encoder input of ``n_tokens`` text tokens fits the model's positions."""
    if n_tokens > cfg.max_positions:
        raise OFAValueError(
            f"the input text is {n_tokens} tokens long; this model reads at most {cfg.max_positions}"
        )
