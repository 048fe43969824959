"""Loading every checkpoint format, safely, with clear errors."""

import argparse
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import MMP_CKPT
from tolerance import assert_matches_reference

from ofa_vl import CheckpointError, convert
from ofa_vl.checkpoints import load_model

# mmpretrain name -> fairseq name, per OFA-NOTES 3.3 read backwards (module after the prefix)
TOP = {"embed_type": "type_embedding", "embedding_ln": "layernorm_embedding",
       "image_embedding_ln": "patch_layernorm_embedding", "final_ln": "layer_norm",
       "code_embedding_ln": "code_layernorm_embedding"}  # fmt: skip
ENC_FS = {"attn": "self_attn", "attn_ln": "self_attn_layer_norm", "attn_mid_ln": "attn_ln",
          "ffn_mid_ln": "ffn_layernorm", "ffn_ln": "final_layer_norm"}  # fmt: skip
DEC_FS = {"self_attn_ln": "self_attn_layer_norm", "self_attn_mid_ln": "self_attn_ln",
          "cross_attn": "encoder_attn", "cross_attn_ln": "encoder_attn_layer_norm",
          "cross_attn_mid_ln": "cross_attn_ln", "ffn_mid_ln": "ffn_layernorm",
          "ffn_ln": "final_layer_norm"}  # fmt: skip
# OFA-NOTES 3.4: the HF port = fairseq names with these per-layer renames
ENC_HF = {**ENC_FS, "attn_mid_ln": "self_attn_mid_layer_norm", "ffn_mid_ln": "ffn_layer_norm"}
DEC_HF = {**DEC_FS, "self_attn_mid_ln": "self_attn_mid_layer_norm", "cross_attn": "cross_attn",
          "cross_attn_ln": "cross_attn_layer_norm", "cross_attn_mid_ln": "cross_attn_mid_layer_norm",
          "ffn_mid_ln": "ffn_layer_norm"}  # fmt: skip


def rename(sd, enc_map, dec_map):
    out = {}
    for key, v in sd.items():
        parts = key[len("model.") :].split(".")
        if parts[1] in TOP:
            parts[1] = TOP[parts[1]]
        elif parts[1] == "layers":
            parts[3] = (enc_map if parts[0] == "encoder" else dec_map).get(parts[3], parts[3])
        out[".".join(parts)] = v
    return out


@pytest.fixture(scope="module")
def mmp_sd():
    return torch.load(MMP_CKPT, weights_only=True)


def logits_of(model, golden):
    i = golden["inputs"]
    with torch.no_grad():
        return model(i["input_ids"], i["images"], i["decoder_input_ids"], i["images_mask"]).logits


def check_same(model, golden):
    assert_matches_reference(logits_of(model, golden), golden, "decoder", "logits")


def fairseq_checkpoint(mmp_sd, with_buffers=True):
    sd = rename(mmp_sd, ENC_FS, DEC_FS)
    sd["encoder.version"] = sd["decoder.version"] = torch.tensor([3.0])
    ids = torch.cat([torch.tensor([0]), torch.arange(256), torch.full((769,), 1024)])  # 1026 long
    sd["decoder.image_position_idx"] = ids
    if with_buffers:
        sd["encoder.token_rp_bucket"] = torch.zeros(4, 4, dtype=torch.long)
    return sd


@pytest.mark.slow
def test_fairseq_checkpoint_with_config_objects_and_ema(tmp_path, mmp_sd, golden):
    good = fairseq_checkpoint(mmp_sd)
    noisy = {k: v + 0.5 if v.is_floating_point() else v for k, v in good.items()}
    ckpt = {
        "args": None,
        "cfg": {"model": argparse.Namespace(arch="ofa_tiny", dropout=0.1)},
        "model": noisy,
        "extra_state": {"ema": good, "metrics": {}},
        "optimizer_history": [{"criterion_name": "AdjustLabelSmoothedCrossEntropyCriterion"}],
    }
    path = tmp_path / "caption_base_best.pt"
    torch.save(ckpt, path)
    with pytest.raises(pickle.UnpicklingError):  # the Namespace needs more than weights_only
        torch.load(path, weights_only=True)
    check_same(load_model(path), golden)  # EMA weights by default
    assert not torch.allclose(
        logits_of(load_model(path, use_ema=False), golden),
        golden["decoder"]["logits"],
        atol=1e-2,
    )


@pytest.mark.slow
def test_fairseq_checkpoint_without_ema(tmp_path, mmp_sd, golden):
    path = tmp_path / "ofa.pt"
    torch.save({"model": fairseq_checkpoint(mmp_sd, with_buffers=False), "extra_state": {}}, path)
    check_same(load_model(path), golden)


@pytest.mark.parametrize("kind", ["bin", "safetensors"])
def test_hf_port_directory(tmp_path, mmp_sd, golden, kind):
    sd = rename(mmp_sd, ENC_HF, DEC_HF)
    sd["decoder.image_position_idx"] = torch.cat(
        [torch.tensor([0]), torch.arange(256), torch.full((768,), 1024)]
    )
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "ofa", "d_model": 64}))
    if kind == "bin":
        torch.save(sd, tmp_path / "pytorch_model.bin")
    else:
        from safetensors.torch import save_file

        save_file(
            {k: v.clone().contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors")
        )
    model = load_model(tmp_path)
    assert model.cfg.code_image_size == 128
    check_same(model, golden)


def test_mmpretrain_checkpoint_with_index_buffers(tmp_path, mmp_sd, golden):
    sd = dict(mmp_sd)
    sd["model.encoder.token_rp_bucket"] = torch.zeros(1024, 1024, dtype=torch.long)
    sd["model.decoder.image_rp_bucket"] = torch.zeros(3, 3, dtype=torch.long)
    torch.save(sd, tmp_path / "m.pth")
    check_same(load_model(tmp_path / "m.pth"), golden)


@pytest.mark.slow
def test_convert_round_trip(tmp_path, golden):
    out = convert(MMP_CKPT, tmp_path / "ofa-test.safetensors")
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert f.metadata()["format"] == "ofa-vl"
        assert json.loads(f.metadata()["config"])["embed_dim"] == 64
    check_same(load_model(out), golden)


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": Evil()}, path)
    with pytest.raises(CheckpointError, match="refusing to load.*system"):
        load_model(path)
    assert not marker.exists()


def test_truncated_file(tmp_path):
    data = MMP_CKPT.read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="cut.pth: not a readable checkpoint"):
        load_model(path)


def test_missing_and_unexpected_keys(tmp_path, mmp_sd):
    sd = dict(mmp_sd)
    del sd["model.decoder.final_ln.weight"]
    sd["model.decoder.surprise"] = torch.zeros(1)
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(
        CheckpointError,
        match=r"m.pth: .*1 missing keys \(e.g. decoder.final_ln.weight\).*1 unexpected keys",
    ):
        load_model(tmp_path / "m.pth")


def test_wrong_shape(tmp_path, mmp_sd):
    sd = dict(mmp_sd)
    sd["model.decoder.final_ln.weight"] = torch.zeros(65)
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(
        CheckpointError, match=r"decoder.final_ln.weight has shape \(65,\), expected \(64,\)"
    ):
        load_model(tmp_path / "m.pth")


def test_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="directory holds no weights"):
        load_model(tmp_path)


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds no OFA state dict"):
        load_model(tmp_path / "list.pt")


def test_missing_path_is_clear():
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(Path("/nonexistent/dir/model.pth"))
