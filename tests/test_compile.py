"""The compiled decoding step (``compile_decoder``, ``compile=True``) against the eager one."""

import copy

import pytest
import torch
from conftest import GOLDENS, MMP_CKPT
from torch._dynamo.utils import counters

from ofa_vl.api import get_model
from ofa_vl.model.compile import compile_decoder
from ofa_vl.model.precision import apply_precision, model_dtype
from ofa_vl.options import check_compile
from ofa_vl.tokenizer import ENGLISH_BPE

GOLDEN = GOLDENS / "ofa-test_seed0_img64.pt"


def golden_case(mode: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Prompt ids, images and decoding options of the golden ``mode`` (greedy, beam5)."""
    g = torch.load(GOLDEN, weights_only=True)
    kw = {k: v for k, v in g["generate"][mode]["kwargs"].items() if k != "use_cache"}
    return g["inputs"]["input_ids"], g["inputs"]["images"], kw


@pytest.mark.slow
def test_compiled_step_gives_the_eager_ids(fixture_model):
    """Greedy and beam search (5 beams: rows reordered, finished sentences leave the batch) give
    exactly the eager ids; a second decoding of the same shapes compiles nothing new."""
    compiled = copy.deepcopy(fixture_model)
    compile_decoder(compiled)
    for mode in ("greedy", "beam5"):
        ids, images, kw = golden_case(mode)
        eager = fixture_model.generate(ids, images, **kw)
        assert torch.equal(compiled.generate(ids, images, **kw), eager)
        graphs = counters["stats"]["unique_graphs"]
        assert torch.equal(compiled.generate(ids, images, **kw), eager)
        assert counters["stats"]["unique_graphs"] == graphs  # no recompilation per step or call


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_compiled_step_in_reduced_precision(fixture_model, precision):
    """A bf16 model (fp32 residual stream and logits, bf16 KV cache) and an int8 one (its int8
    projection outside the compiled step) compile to their eager ids."""
    ids, images, kw = golden_case("beam5")
    eager = apply_precision(copy.deepcopy(fixture_model), precision)
    images = images.to(model_dtype(eager))
    expected = eager.generate(ids, images, **kw)
    compile_decoder(eager)
    assert torch.equal(eager.generate(ids, images, **kw), expected)


def test_compile_option_is_checked(monkeypatch):
    with pytest.raises(ValueError, match="compile must be True or False, got 'yes'"):
        get_model(MMP_CKPT, tokenizer=ENGLISH_BPE, compile="yes")
    with pytest.raises(ValueError, match="compile does not support int8-legacy; use int8"):
        get_model(MMP_CKPT, tokenizer=ENGLISH_BPE, precision="int8-legacy", compile=True)
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ValueError, match="needs a C\\+\\+ compiler") as err:
        check_compile(True, torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_get_model_compiles_the_decoder_step():
    """``compile=True`` swaps in the compiled step (compiled lazily, at the first decoding)."""
    plain = get_model(MMP_CKPT, tokenizer=ENGLISH_BPE, task="caption")
    built = get_model(MMP_CKPT, tokenizer=ENGLISH_BPE, task="caption", compile=True)
    assert plain.model.decoder.compiled_step is None
    assert callable(built.model.decoder.compiled_step)
