"""One rule for "equal to float round-off", used by every float comparison with the reference.

Float32 round-off differs between CPU kernels, so the reference itself, run by the same script
on two kinds of CPU (AVX2; AVX-512), disagrees by up to 2.3e-5 of a tensor's largest magnitude
(encoder states; logits 1.6e-5, beam scores 4.5e-6: goldens/avx512/README.md). An absolute bound
cannot hold both for logits of 72 and for scores of 5, so the bound scales with the tensor:
``max |actual - expected| <= REL_TOL * max |expected|``. REL_TOL is four times the worst measured
spread, 2.8 times ofa-vl's worst on a third kernel set (SSE), room for CPUs neither set was made
on; the smallest planted error that tests/test_model.py rejects exceeds it 28-fold. Ids and strings are compared exactly, never here.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

REL_TOL = 1e-4


def assert_close_to(
    actual: torch.Tensor, expected: torch.Tensor, rel: float = REL_TOL, what: str = ""
) -> None:
    """Raise AssertionError unless ``actual`` equals ``expected`` to ``rel`` of its largest value."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    finite = e.isfinite()
    assert torch.equal(a.isfinite(), finite) and torch.equal(a[~finite], e[~finite]), (
        f"{what}: the masked (infinite) entries differ"
    )
    err, scale = (a - e)[finite].abs().max(), e[finite].abs().max()
    assert err <= rel * scale, (
        f"{what}: max |difference| {err:.3g} is {err / scale:.2g} of max |expected| {scale:.3g}, "
        f"over the {rel:g} allowed"
    )


def assert_matches_reference(actual: torch.Tensor, golden: Mapping, *path: str) -> None:
    """``actual`` against the tensor at ``path`` in the golden case, as computed on every CPU."""
    for cpu, case in golden.sets.items():
        expected = case
        for key in path:
            expected = expected[key]
        assert_close_to(actual, expected, what=f"{'/'.join(path)} ({cpu} goldens)")
