"""LoRA adapters through PEFT (``ofa_vl.lora``) and activation checkpointing, on tiny models."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tolerance import assert_close_to
from torch.utils.checkpoint import checkpoint

from ofa_vl.checkpoints import load_model, save_pretrained
from ofa_vl.cli import main
from ofa_vl.config import OFAConfig
from ofa_vl.errors import OFAError, OFAFileNotFoundError, OFAValueError, describe
from ofa_vl.lora import (
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    LoraOptions,
    adapter_state_dict,
    add_lora,
    has_adapter,
    load_adapter,
    lora_parameters,
    merge_adapter,
    save_adapter,
    target_modules,
)
from ofa_vl.model import OFA
from ofa_vl.model.linear import linear

TINY = dict(
    embed_dim=32,
    encoder_layers=1,
    decoder_layers=2,
    num_heads=2,
    vocab_size=300,
    resnet_layers=(1, 1, 1),
    resnet_width=8,
    max_positions=64,
    image_bucket_size=8,
)
IDS = torch.tensor([[0, 5, 6, 7, 2], [0, 9, 2, 1, 1]])
IMAGES = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
DEC = torch.tensor([[0, 7, 8, 9, 10], [0, 11, 12, 1, 1]])


def _tiny(seed: int = 0, **overrides: float) -> OFA:
    torch.manual_seed(seed)
    return OFA(OFAConfig(**{**TINY, **overrides}))  # type: ignore[arg-type]


def _random_adapter(model: OFA, options: LoraOptions | None = None) -> OFA:
    """``model`` with an adapter whose B is not zero (a fresh one changes nothing)."""
    add_lora(model, options or LoraOptions())
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in adapter_state_dict(model).values():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def _loss(model: OFA) -> torch.Tensor:
    logits = model(IDS, IMAGES, DEC).logits  # (B, T, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), DEC[:, 1:].flatten(), ignore_index=1)


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFA_VL_HOME", str(tmp_path / "home"))  # the weights fingerprint cache


@pytest.mark.slow  # PEFT's import alone takes ~8 s (it imports transformers)
def test_adapter_of_ofa_base_is_a_small_fraction() -> None:
    """Counted on OFA-base built on the meta device (no memory): attention and FFN at rank 8."""
    with torch.device("meta"):
        model = OFA(OFAConfig.from_preset("base"))
    add_lora(model, LoraOptions(rank=8))
    trainable, total = lora_parameters(model)
    cfg = model.cfg
    c, f = cfg.embed_dim, cfg.ffn
    per_encoder = 4 * 8 * (c + c) + 8 * (c + f) * 2  # q k v out, fc1 fc2: r * (in + out)
    per_decoder = 8 * 8 * (c + c) + 8 * (c + f) * 2  # self- and cross-attention
    expected = cfg.encoder_layers * per_encoder + cfg.decoder_layers * per_decoder
    print(f"\nofa-base LoRA r=8: {trainable:,} of {total:,} parameters ({trainable / total:.2%})")
    assert trainable == expected
    assert trainable / total < 0.01
    assert all(p.requires_grad == (".lora_" in n) for n, p in model.named_parameters())


def test_target_groups_select_the_attention_and_ffn_linears() -> None:
    model = _tiny()
    attention = target_modules(model, ("attention",))
    ffn = target_modules(model, ("ffn",))
    assert len(attention) == 1 * 4 + 2 * 8 and len(ffn) == 3 * 2
    assert "decoder.layers.1.cross_attn.v_proj" in attention
    assert target_modules(model, ("fc1",)) == [n for n in ffn if n.endswith("fc1")]
    assert target_modules(model, (r"decoder\.layers\.\d+\.self_attn\.q_proj",)) == [
        "decoder.layers.0.self_attn.q_proj",
        "decoder.layers.1.self_attn.q_proj",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("rows", [3, 40])  # the weight-stationary path (few rows) and F.linear
def test_wrapped_linear_computes_the_lora_update(rows: int) -> None:
    """PEFT replaces the Linear; OFA's ``linear()`` must call it, not the bare weights."""
    model = _random_adapter(_tiny(), LoraOptions(rank=4, alpha=8.0))
    layer = model.decoder.layers[0].self_attn.q_proj
    base = layer.get_base_layer()
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # (r, C), (C, r)
    x = torch.randn(1, rows, 32)
    expected = F.linear(x, base.weight, base.bias) + 2.0 * (x @ a.T @ b.T)
    torch.testing.assert_close(linear(layer, x), expected)


@pytest.mark.slow
def test_training_steps_change_only_the_adapter() -> None:
    model = _tiny()
    add_lora(model, LoraOptions(rank=4, dropout=0.1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    model.train()
    for _ in range(3):
        _loss(model).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n in before if ".lora_" in n}


@pytest.mark.slow
def test_merged_model_gives_the_outputs_of_base_plus_adapter(tmp_path: Path) -> None:
    model = _random_adapter(_tiny()).eval()
    with torch.no_grad():
        adapted = model(IDS, IMAGES, DEC).logits
        ids = model.generate(IDS, IMAGES, num_beams=2, max_new_tokens=6)
        base = _tiny()(IDS, IMAGES, DEC).logits
    assert not torch.allclose(adapted, base, atol=1e-3)  # the adapter is in the forward pass
    with pytest.raises(OFAValueError, match="has a LoRA adapter: save it with"):
        save_pretrained(model, tmp_path / "adapted.safetensors")  # PEFT-renamed weights
    merged_copy = merge_adapter(copy.deepcopy(model))  # what a trainer publishes mid-run
    assert has_adapter(model) and not has_adapter(merged_copy)
    merged = merge_adapter(model)
    assert all(p.requires_grad for p in merged.parameters())
    assert torch.equal(merged_copy.embed_tokens.weight, merged.embed_tokens.weight)
    assert torch.equal(
        merged_copy.decoder.layers[0].fc1.weight, merged.decoder.layers[0].fc1.weight
    )
    assert set(merged.state_dict()) == set(_tiny().state_dict())
    with torch.no_grad():
        assert_close_to(merged(IDS, IMAGES, DEC).logits, adapted)
        assert torch.equal(merged.generate(IDS, IMAGES, num_beams=2, max_new_tokens=6), ids)
    reloaded = load_model(save_pretrained(merged, tmp_path / "merged.safetensors"))
    with torch.no_grad():
        assert_close_to(reloaded(IDS, IMAGES, DEC).logits, adapted)


def _base_folder(root: Path) -> Path:
    folder = root / "base"
    save_pretrained(_tiny(), folder / "model.safetensors")
    (folder / "pipeline.json").write_text(json.dumps({"image_size": 64}))
    return folder


@pytest.mark.slow
def test_adapter_round_trip_is_small_and_exact(tmp_path: Path) -> None:
    base = _base_folder(tmp_path)
    options = LoraOptions(rank=2, alpha=4.0, targets=("attention",))
    model = _random_adapter(load_model(base), options).eval()
    out = save_adapter(model, tmp_path / "adapter", options)
    meta = json.loads((out / ADAPTER_CONFIG).read_text())
    assert LoraOptions.from_dict(meta["options"]) == options
    assert meta["base"]["fingerprint"].startswith("sha256:")
    adapter_bytes = (out / ADAPTER_FILE).stat().st_size
    model_bytes = (base / "model.safetensors").stat().st_size
    print(f"\nadapter {adapter_bytes:,} bytes, model {model_bytes:,} bytes")
    assert adapter_bytes < model_bytes / 10
    loaded = load_adapter(load_model(base), out).eval()
    with torch.no_grad():
        assert torch.equal(loaded(IDS, IMAGES, DEC).logits, model(IDS, IMAGES, DEC).logits)


@pytest.mark.slow
def test_convert_merge_adapter_writes_a_plain_model_folder(tmp_path: Path) -> None:
    base = _base_folder(tmp_path)
    model = _random_adapter(load_model(base)).eval()
    adapter = save_adapter(model, tmp_path / "run")
    dst = tmp_path / "merged"
    assert main(["convert", str(base), str(dst), "--merge-adapter", str(adapter)]) == 0
    assert (dst / "pipeline.json").read_text() == (base / "pipeline.json").read_text()
    merged = load_model(dst)
    assert merged.cfg == model.cfg
    with torch.no_grad():
        expected = model(IDS, IMAGES, DEC).logits
        assert_close_to(merged(IDS, IMAGES, DEC).logits, expected)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(rank=0), "rank must be a positive integer"),
        (dict(alpha=-1.0), "alpha must be positive"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(targets=()), "LoRA needs targets"),
        (dict(targets=("q_proj(",)), "no valid pattern"),
    ],
)
def test_bad_options_are_one_line(options: dict[str, object], message: str) -> None:
    with pytest.raises(OFAValueError, match=message) as err:
        LoraOptions(**options)  # type: ignore[arg-type]
    assert "\n" not in describe(err.value)


def test_unknown_target_names_the_groups() -> None:
    with pytest.raises(
        OFAValueError,
        match=r"'atention' is no group \(attention, ffn\).*encoder\.layers\.0\.attn\.q_proj",
    ):
        add_lora(_tiny(), LoraOptions(targets=("atention",)))


@pytest.mark.slow
def test_mismatched_or_missing_adapter_is_refused(tmp_path: Path) -> None:
    adapter = save_adapter(_random_adapter(_tiny()), tmp_path / "adapter")
    wider = _tiny(embed_dim=64)  # type: ignore[arg-type]
    with pytest.raises(OFAValueError, match=r"does not fit this model: .* has shape \(8, 32\)"):
        load_adapter(wider, adapter)
    assert not any(".lora_" in n for n, _ in wider.named_parameters())  # left untouched
    deeper = _tiny(decoder_layers=3)  # type: ignore[arg-type]
    with pytest.raises(OFAValueError, match="0 tensors for modules it lacks, 20 missing"):
        load_adapter(deeper, adapter)
    with pytest.raises(OFAFileNotFoundError, match="not a LoRA adapter folder"):
        load_adapter(_tiny(), tmp_path)
    with pytest.raises(OFAValueError, match="already has a LoRA adapter"):
        add_lora(_random_adapter(_tiny()), LoraOptions())
    with pytest.raises(OFAError, match="has no LoRA adapter"):
        merge_adapter(_tiny())


@pytest.mark.slow
def test_convert_refuses_a_mismatched_adapter_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = save_adapter(_random_adapter(_tiny()), tmp_path / "adapter")
    base = tmp_path / "wide.safetensors"
    save_pretrained(_tiny(embed_dim=64), base)  # type: ignore[arg-type]
    assert main(["convert", str(base), str(tmp_path / "out"), "--merge-adapter", str(adapter)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit this model" in err
    assert not (tmp_path / "out").exists()


def _loss_and_grads(checkpointing: bool, lora: bool) -> tuple[float, dict[str, torch.Tensor]]:
    """Loss and gradients of one training step, dropout and drop-path on."""
    model = _tiny(dropout=0.1, attention_dropout=0.1, encoder_drop_path_rate=0.1)
    if lora:
        _random_adapter(model, LoraOptions(rank=4, dropout=0.1))
    model.set_gradient_checkpointing(checkpointing).train()
    calls = []
    model.decoder.layers[1].register_forward_pre_hook(lambda *_: calls.append(1))
    torch.manual_seed(3)
    loss = _loss(model)
    loss.backward()
    assert len(calls) == (2 if checkpointing else 1)  # recomputed in the backward pass
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


@pytest.mark.parametrize("lora", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(lora: bool) -> None:
    loss, grads = _loss_and_grads(False, lora)
    ckpt_loss, ckpt_grads = _loss_and_grads(True, lora)
    assert ckpt_loss == loss
    assert grads.keys() == ckpt_grads.keys() and len(grads) > 10
    for name, g in grads.items():
        torch.testing.assert_close(ckpt_grads[name], g, rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_only_in_training_with_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    import ofa_vl.model.encoder as encoder

    calls = []

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return checkpoint(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder, "checkpoint", counted)
    model = _tiny().set_gradient_checkpointing(True)
    _loss(model.eval()).backward()
    model.train().generate(IDS, IMAGES, num_beams=2, max_new_tokens=3)
    assert calls == []
    _loss(model.train())
    assert len(calls) == 1 + 2  # every encoder and decoder layer
    model.set_gradient_checkpointing(False)
    _loss(model)
    assert len(calls) == 3
