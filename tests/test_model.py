"""The network against the golden outputs of mmpretrain's OFA, and the size presets."""

import copy
import os
import subprocess
import sys

import pytest
import torch
from tolerance import assert_close_to, assert_matches_reference

from ofa_vl import OFA, OFAConfig
from ofa_vl.model import attention as attention_module
from ofa_vl.model import precision as precision_module
from ofa_vl.model.attention import Attention, per_head_attention
from ofa_vl.model.precision import Int8Linear, apply_precision, int8_linears


def test_encoder_matches_reference(fixture_model, golden):
    i = golden["inputs"]
    with torch.no_grad():
        enc = fixture_model.encode(i["input_ids"], i["images"], i["images_mask"])
    assert_matches_reference(enc.last_hidden_state, golden, "encoder", "last_hidden_state")
    assert_matches_reference(enc.position_embedding, golden, "encoder", "position_embedding")
    assert torch.equal(enc.padding_mask, golden["encoder"]["padding_mask"])


@pytest.mark.parametrize("key", ["decoder_input_ids", "decoder_input_ids_nopad"])
def test_teacher_forced_logits_match_reference(fixture_model, golden, key):
    i = golden["inputs"]
    with torch.no_grad():
        out = fixture_model(i["input_ids"], i["images"], i[key], i["images_mask"])
    want = "logits" if key == "decoder_input_ids" else "logits_nopad"
    assert_matches_reference(out.logits, golden, "decoder", want)


def test_both_cpus_goldens_share_inputs_and_ids(golden):
    """The two sets differ in float round-off only: inputs, masks and generated ids are equal."""
    a, b = golden.sets.values()
    assert a["inputs"].keys() == b["inputs"].keys()
    assert all(torch.equal(a["inputs"][k], b["inputs"][k]) for k in a["inputs"])
    assert torch.equal(a["encoder"]["padding_mask"], b["encoder"]["padding_mask"])
    for mode in ("greedy", "beam5"):
        assert torch.equal(a["generate"][mode]["sequences"], b["generate"][mode]["sequences"])
    kernels = [case["meta"]["machine"]["torch_cpu_capability"] for case in (a, b)]
    assert kernels == ["AVX2", "AVX512"] and not torch.equal(
        a["decoder"]["logits"], b["decoder"]["logits"]
    )


def _attentions(model: OFA) -> list[Attention]:
    return [m for m in model.modules() if isinstance(m, Attention)]  # 2 encoder, 2 x 2 decoder


# Small errors a port makes, planted in one attention module at a time.
MUTATIONS = {
    # sqrt((head_dim + 1) * attn_scale_factor) instead of sqrt(head_dim * attn_scale_factor)
    "scale_off_by_one_head_dim": lambda a: setattr(
        a, "scale", a.scale * (a.head_dim / (a.head_dim + 1)) ** 0.5
    ),
    "head_scale_left_out": lambda a: a.c_attn.data.fill_(1.0),  # NormFormer's --scale-heads
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_slightly_wrong_network_fails_against_both_cpus_goldens(fixture_model, golden, mutation):
    """The tolerance that accepts the reference of either CPU still rejects a wrong network,
    wherever the error sits (each of the six attention modules)."""
    i = golden["inputs"]
    for k in range(len(_attentions(fixture_model))):
        model = copy.deepcopy(fixture_model)
        MUTATIONS[mutation](_attentions(model)[k])
        with torch.no_grad():
            out = model(i["input_ids"], i["images"], i["decoder_input_ids"], i["images_mask"])
        for cpu, case in golden.sets.items():
            with pytest.raises(AssertionError, match="allowed"):
                assert_close_to(out.logits, case["decoder"]["logits"], what=f"{cpu}, attn {k}")


def test_layer_norms_use_fairseq_eps(fixture_model):
    """eps = 1e-5 (fairseq's LayerNorm is torch's, at its default). A golden comparison cannot
    see this one: eps 1e-6 moves the fixture's outputs by 2-4e-5 of their scale, as much as
    the two CPUs' round-off (goldens/avx512/README.md), since each norm's input has variance ~1."""
    norms = [m for m in fixture_model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) > 20 and {m.eps for m in norms} == {1e-5}


def test_images_mask_false_hides_the_image(fixture_model, golden):
    """A sample without image attends to its text only: same as encoding the text alone."""
    i = golden["inputs"]
    with torch.no_grad():
        masked = fixture_model.encode(i["input_ids"], i["images"], torch.tensor([False, True]))
        text_only = fixture_model.encode(i["input_ids"], None)
        full = fixture_model.encode(i["input_ids"], i["images"], i["images_mask"])
    P = masked.last_hidden_state.shape[1] - i["input_ids"].shape[1]
    assert masked.padding_mask[0, :P].all() and not masked.padding_mask[1, :P].any()
    assert_close_to(masked.last_hidden_state[0, P:], text_only.last_hidden_state[0])
    assert not torch.allclose(
        full.last_hidden_state[0, P:], text_only.last_hidden_state[0], atol=1e-3
    )
    assert_close_to(masked.last_hidden_state[1], full.last_hidden_state[1])


@pytest.mark.parametrize(
    "name,count",
    [("tiny", 33_488_336), ("medium", 92_892_000), ("base", 182_238_536)],
)
@pytest.mark.slow
def test_preset_parameter_counts(name, count):
    """``base`` = 182,238,536 as mmpretrain's metafile says; the others as OFA-NOTES 1.1."""
    with torch.device("meta"):
        model = OFA(OFAConfig.from_preset(name))
    assert model.num_parameters() == count


def test_large_and_huge_presets_shapes():
    with torch.device("meta"):
        large = OFA(OFAConfig.from_preset("large"))
        huge = OFA(OFAConfig.from_preset("huge"))
    assert (len(large.encoder.layers), len(large.decoder.layers)) == (12, 12)
    assert (len(huge.encoder.layers), len(huge.decoder.layers)) == (24, 12)
    assert large.encoder.embed_images.out_channels == 1024
    assert round(large.num_parameters() / 1e6, 2) == 472.98
    assert round(huge.num_parameters() / 1e6, 2) == 929.49


def test_output_head_is_tied(fixture_model):
    m = fixture_model
    assert m.decoder.output_projection.weight.data_ptr() == m.encoder.embed_tokens.weight.data_ptr()
    assert m.decoder.embed_tokens is m.encoder.embed_tokens


def test_code_masks_rows_use_image_positions(fixture_model, golden):
    """Image-code rows (text-to-image checkpoints) run and differ from text rows."""
    i = golden["inputs"]
    dec = torch.tensor([[0, 50265 + 5, 50265 + 7, 50265 + 9]] * 2)
    with torch.no_grad():
        text = fixture_model(i["input_ids"], i["images"], dec).logits
        code = fixture_model(
            i["input_ids"], i["images"], dec, code_masks=torch.tensor([True, False])
        ).logits
    assert_close_to(code[1], text[1])
    assert not torch.allclose(code[0], text[0], atol=1e-3)


@pytest.mark.slow
def test_too_large_image_is_refused(fixture_model):
    with pytest.raises(ValueError, match="patch grid"):
        fixture_model.encode(torch.tensor([[0, 2]]), torch.zeros(1, 3, 688, 688))


def _entangled_pair() -> tuple[OFA, OFA]:
    cfg = dict(embed_dim=32, encoder_layers=1, decoder_layers=2, num_heads=2, vocab_size=300,
               resnet_layers=(1, 1, 1), resnet_width=8, max_positions=64, image_bucket_size=8,
               code_image_size=32)  # fmt: skip
    torch.manual_seed(0)
    plain = OFA(OFAConfig(**cfg)).eval()  # type: ignore[arg-type]
    entangled = OFA(OFAConfig(**cfg, entangle_position_embedding=True)).eval()  # type: ignore[arg-type]
    entangled.load_state_dict(plain.state_dict())
    return plain, entangled


def test_entangled_positions_enter_encoder_and_decoder():
    """OFA's --entangle-position-embedding adds positions to the inputs of both stacks."""
    plain, entangled = _entangled_pair()
    ids, images = torch.tensor([[0, 5, 6, 2]]), torch.randn(1, 3, 64, 64)
    dec = torch.tensor([[0, 7, 8]])
    with torch.no_grad():
        a, b = plain.encode(ids, images), entangled.encode(ids, images)
        P = 16  # 4 x 4 patches, then the text
        assert not torch.allclose(a.last_hidden_state[:, :P], b.last_hidden_state[:, :P])
        assert not torch.allclose(a.last_hidden_state[:, P:], b.last_hidden_state[:, P:])
        # the same encoder output: only the decoder's own entangling changes its logits
        assert not torch.allclose(plain.decoder(dec, a), entangled.decoder(dec, a))


def test_entangled_incremental_decoding_matches_teacher_forcing():
    _, model = _entangled_pair()
    ids, images = torch.tensor([[0, 5, 6, 2]] * 2), torch.randn(2, 3, 64, 64)
    dec = torch.tensor([[0, 7, 8, 9, 10]] * 2)
    code_masks = torch.tensor([True, False])  # one image-code row, one text row
    with torch.no_grad():
        enc = model.encode(ids, images)
        full = model.decoder(dec, enc, code_masks)
        state = model.decoder.init_state(enc, group=1, max_len=8, code_masks=code_masks)
        steps = [model.decoder.step(dec[:, :2], state)]
        steps += [model.decoder.step(dec[:, t : t + 1], state) for t in range(2, dec.shape[1])]
    assert_close_to(torch.cat(steps, 1), full)


def test_image_features_do_not_depend_on_the_input_layout(fixture_model):
    """One HWC image viewed as a (1, 3, H, W) batch (a preprocessed image) and its stacked copy
    give the same ResNet features, bit for bit: the ResNet makes its own NHWC copy."""
    torch.manual_seed(0)
    hwc = torch.randn(64, 64, 3)
    view = hwc.permute(2, 0, 1)[None]  # NHWC-looking strides, batch stride 3
    with torch.no_grad():
        a = fixture_model.encoder.embed_images(view)
        b = fixture_model.encoder.embed_images(torch.stack([hwc.permute(2, 0, 1)]))
    assert torch.equal(a, b)


def test_bf16_attention_takes_its_bias_in_fp32_on_the_cpu(fixture_model, monkeypatch):
    """bf16 on the CPU: every attention gets its position bias as fp32 (``mask_dtype``), which
    the kernel adds unrounded: closer to fp32's output than the bias rounded to bf16."""
    torch.manual_seed(0)
    attn = Attention(768, 12)
    x, bias = torch.randn(1, 200, 768), 4 * torch.randn(1, 12, 200, 200)  # OFA-base-sized
    low = copy.deepcopy(attn).to(torch.bfloat16)
    with torch.no_grad():
        ref = attn(x, bias=bias)
        unrounded = (low(x.bfloat16(), bias=bias).float() - ref).abs().mean()
        rounded = (low(x.bfloat16(), bias=bias.bfloat16()).float() - ref).abs().mean()
    assert 2 * unrounded < rounded, (unrounded, rounded)

    masks = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, attn_mask, **kw):
        masks.append(attn_mask.dtype)
        return sdpa(*args, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = apply_precision(copy.deepcopy(fixture_model), "bf16")
    ids, images = torch.tensor([[0, 5, 9, 2]]), torch.randn(1, 3, 64, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        model.generate(ids, images, num_beams=2, max_new_tokens=3)
    assert masks and set(masks) == {torch.float32}


def test_bf16_per_head_attention_keeps_its_logits_fp32():
    """The long-sequence bf16 path against exact attention on the same bf16 inputs: within 2x
    the error of rounding the exact output to bf16 (measured 1.42x; PyTorch's flash kernel
    1.14x), where logits rounded to bf16 before the bias (the rejected math path) land 3.8x."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 12, 300, 64).bfloat16() for _ in range(3))
    q = (3 * q.float()).bfloat16()  # logits of std 2.4 beside a bias of std 3
    pad = torch.zeros(2, 1, 1, 300)
    pad[1, ..., 290:] = -torch.inf  # sample 1's last 10 keys are padding
    bias = 3 * torch.randn(1, 12, 300, 300) + pad
    exact = torch.nn.functional.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), attn_mask=bias.double(), scale=0.1
    )

    def error(out: torch.Tensor) -> float:
        return (out.double() - exact).abs().mean().item()

    out = per_head_attention(q, k, v, bias, 0.1)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    assert error(out) < 2 * error(exact.bfloat16())
    logits16 = (q @ k.transpose(-1, -2) * 0.1).float() + bias
    assert error(logits16.softmax(-1).bfloat16() @ v) > 2 * error(out)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_attention_takes_the_per_head_path_on_long_inputs_in_inference(monkeypatch, native):
    """Where the CPU runs bf16 natively (the CPUs it was measured on), from 256 x 256 logits per
    head, without gradients; PyTorch's kernel everywhere else."""
    calls = []

    def spy(*args: object) -> torch.Tensor:
        calls.append(args[0].shape)  # type: ignore[attr-defined]
        return per_head_attention(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(attention_module, "per_head_attention", spy)
    monkeypatch.setattr(attention_module, "native_bf16", lambda: native)
    torch.manual_seed(0)
    attn = Attention(64, 4).to(torch.bfloat16)
    long, short = torch.randn(1, 256, 64).bfloat16(), torch.randn(1, 255, 64).bfloat16()
    with torch.no_grad():
        attn(long), attn(short)
    assert calls == ([(1, 4, 256, 16)] if native else [])
    attn(long).float().sum().backward()  # gradients: PyTorch's kernel, which has a backward
    assert len(calls) == native and attn.q_proj.weight.grad is not None


@pytest.mark.parametrize("cpu", ["this", "without native bf16"])
def test_bf16_fp32_products_sets_the_flag_only_while_it_runs(monkeypatch, cpu):
    if cpu != "this":
        monkeypatch.setattr(attention_module, "native_bf16", lambda: False)
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    with pytest.raises(KeyError), attention_module.bf16_fp32_products():
        assert matmul.fp32_precision == ("bf16" if attention_module.native_bf16() else before)
        raise KeyError  # an error inside still restores it
    assert matmul.fp32_precision == before


def test_bf16_one_query_attention_runs_in_fp32_on_the_cpu():
    """A decoding step's one query per row: bf16 inputs attended by the fp32 kernel (the bf16
    one is 3-4x slower there), so the result is fp32's on the same bf16 inputs, rounded once."""
    torch.manual_seed(0)
    attn = Attention(768, 12).to(torch.bfloat16)
    x, kv_in = torch.randn(5, 1, 768).bfloat16(), torch.randn(5, 28, 768).bfloat16()
    bias = 4 * torch.randn(1, 12, 1, 28)
    with torch.no_grad():
        k, v = attn.project_kv(kv_in)
        q = attn._heads(attn.q_proj(x))
        ref = torch.nn.functional.scaled_dot_product_attention(
            q.float(), k.float(), v.float(), attn_mask=bias, scale=attn.scale
        ).bfloat16()
        out = attn(x, kv=(k, v), bias=bias)
        expected = attn.out_proj(
            (ref * attn.c_attn[:, None, None]).transpose(1, 2).reshape(5, 1, 768)
        )
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected)


@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_is_per_token_int8_arithmetic(bias, monkeypatch):
    """``Int8Linear``: the exact int8 product of its rounded weights and tokens, rescaled (so
    within int8's rounding of fp32), each token's result independent of the rest of the batch
    (a scale per token), and the original weights dropped."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(96, 40, bias=bias)
    x = torch.randn(3, 11, 96) * torch.logspace(-2, 2, 11)[:, None]  # tokens of very unequal size
    x[1, 4] = 0  # an all-zero token (padding) has no scale of its own to divide by
    q8 = Int8Linear(layer)
    with torch.no_grad():
        y, ref = q8(x), layer(x)
    assert y.shape == ref.shape and torch.isfinite(y).all()
    torch.testing.assert_close(y[1, 4], layer.bias if bias else torch.zeros(40))
    flat = x.reshape(-1, 96)
    scale = flat.abs().amax(1, keepdim=True) / 127
    tokens = (flat / scale.clamp(min=1e-30)).round()  # (33, 96)
    exact = tokens.double() @ q8.weight.double().T * scale.double() * q8.weight_scale.double()
    if bias:
        exact += layer.bias.double()
    torch.testing.assert_close(y.reshape(-1, 40).double(), exact, rtol=1e-6, atol=1e-6)
    # int8's rounding: a few % of each token's output, not a bug's 100 %
    err = (y - ref).norm(dim=-1) / ref.norm(dim=-1).clamp(min=1e-6)
    assert err[ref.norm(dim=-1) > 1e-3].max() < 0.03, err.max()
    assert torch.equal(q8(x[:1]), y[:1]) and torch.equal(q8(x[2, 3:5]), y[2, 3:5])
    assert {n for n, _ in q8.named_parameters()} == set() and q8.weight.dtype == torch.int8
    monkeypatch.setattr(precision_module, "exact_int8_gemm", lambda: False)  # the int32 product
    assert torch.equal(q8(x), y)


def test_int8_linears_replaces_only_linears(fixture_model):
    model = copy.deepcopy(fixture_model)
    int8_linears(model, ["encoder.layers.0.fc1"])
    assert isinstance(model.encoder.layers[0].fc1, Int8Linear)
    with pytest.raises(ValueError, match="encoder.layers.0 is a .*, not an nn.Linear") as err:
        int8_linears(model, ["encoder.layers.0"])
    assert "\n" not in str(err.value)


def test_int8_encoder_only_where_the_int8_gemm_is_exact(fixture_model, monkeypatch):
    """Without VNNI oneDNN's int8 product saturates: the check sees it (the ISA capped to AVX2
    in a child process), and then int8 leaves the encoder fp32 (its output projection int8)."""
    code = "from ofa_vl.model.precision import exact_int8_gemm; print(exact_int8_gemm())"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert child.stdout.strip() == "False", child.stderr
    monkeypatch.setattr(precision_module, "exact_int8_gemm", lambda: False)
    model = apply_precision(copy.deepcopy(fixture_model), "int8")
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    assert type(model.decoder.output_projection).__module__.startswith("torch.ao.nn.quantized")
