"""inference_model end to end (image file -> preprocessing -> tokenizer -> generate -> result),
the model zoo and its verified, cached downloads."""

import hashlib
import http.server
import threading

import pytest
import torch
from conftest import IMAGES, MMP_CKPT

from ofa_vl import zoo
from ofa_vl.api import get_model, inference_model, list_models
from ofa_vl.images import preprocess
from ofa_vl.model.precision import ENCODER_INT8, Int8Linear, exact_int8_gemm, model_dtype
from ofa_vl.tasks import TextFields
from ofa_vl.tokenizer import ENGLISH_BPE

HF_DIR = ENGLISH_BPE
CAT = IMAGES / "cat-dog.png"
DOG = IMAGES / "dog.jpg"
FAST = {"max_new_tokens": 5, "num_beams": 2}


def pipeline(fixture_model, tokenizer, task, **opts):
    """A pipeline on the already-loaded fixture model (no reload per test)."""
    from ofa_vl.api import OFAPipeline
    from ofa_vl.tasks import get_task

    return OFAPipeline(fixture_model, tokenizer, get_task(task, image_size=64, **opts))


def manual_generate(model, tok, task, image, **fields):
    """The same computation spelled out step by step, to check the pipeline's plumbing."""
    img, info = preprocess(image, task.image_size, task.interpolation)
    ids = torch.tensor([tok.encode(task.prompt(task.fields_of(fields)))])
    seqs = model.generate(ids, img[None], config=task.generation.replace(**FAST))
    return seqs[0].tolist(), info


@pytest.mark.slow
def test_caption_end_to_end(fixture_model, tokenizer):
    pipe = pipeline(fixture_model, tokenizer, "caption")
    out = inference_model(pipe, str(CAT), **FAST)
    tokens, _ = manual_generate(fixture_model, tokenizer, pipe.task, CAT)
    want = tokenizer.decode(tokens)
    assert set(out) == {"pred_caption"}
    assert out["pred_caption"] == " ".join(
        "".join(c for c in want if c.isalnum() or c.isspace()).split()
    )


@pytest.mark.slow
def test_grounding_end_to_end(fixture_model, tokenizer):
    pipe = pipeline(fixture_model, tokenizer, "refcoco")
    out = inference_model(pipe, [CAT, DOG], text="the cat", constraint_range=(58457, 59457), **FAST)
    assert len(out) == 2
    tokens, info = manual_generate(fixture_model, tokenizer, pipe.task, CAT, text="the cat")
    # constrained to bins, so the 4 tokens after <s> are bins; box in original pixels
    seqs = fixture_model.generate(
        torch.tensor([tokenizer.encode(pipe.task.prompt(TextFields("the cat")))]),
        preprocess(CAT, 64)[0][None],
        config=pipe.task.generation.replace(constraint_range=(58457, 59457), **FAST),
    )[0].tolist()
    bins = [t - 58457 for t in seqs[1:5]]
    w, h = info.scale_factor
    want = [
        bins[0] / 999 * 512 / w,
        bins[1] / 999 * 512 / h,
        bins[2] / 999 * 512 / w,
        bins[3] / 999 * 512 / h,
    ]
    assert out[0]["pred_bboxes"] == [pytest.approx(want, rel=1e-5)]


@pytest.mark.slow
def test_vqa_end_to_end_with_answer_list_and_objects(fixture_model, tokenizer):
    answers = ["yes", "no", "two dogs"]
    pipe = pipeline(fixture_model, tokenizer, "vqa", answers=answers)
    questions = ["is it a cat?", "what is it?"]
    out = inference_model(
        pipe, [CAT, DOG], question=questions, objects=["cat", "dog"], num_beams=2, max_new_tokens=16
    )
    # the question as the model read it, as mmpretrain's inferencer echoes it (OFAAddObjects)
    assert [o["question"] for o in out] == [f"{q} object: cat dog" for q in questions]
    assert all(o["pred_answer"] in answers for o in out)


@pytest.mark.slow
def test_batch_size_does_not_change_results(fixture_model, tokenizer):
    pipe = pipeline(fixture_model, tokenizer, "caption")
    images = [CAT, DOG, CAT]
    assert pipe(images, batch_size=1, **FAST) == pipe(images, batch_size=3, **FAST)


def test_missing_question_is_a_clear_error(fixture_model, tokenizer):
    pipe = pipeline(fixture_model, tokenizer, "vqa")
    with pytest.raises(ValueError, match="needs a non-empty 'question'"):
        pipe(CAT, question="  ")
    with pytest.raises(ValueError, match="2 images but 1 values of 'question'"):
        pipe([CAT, DOG], question=["a?"])


@pytest.mark.slow
def test_get_model_from_path_with_tokenizer_dir():
    pipe = get_model(MMP_CKPT, tokenizer=HF_DIR, task="caption")
    assert pipe.task.name == "caption" and pipe.model.cfg.embed_dim == 64


@pytest.mark.slow
def test_tokenizer_vocab_mismatch_is_refused(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    tok = Tokenizer(WordLevel({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}, unk_token="<unk>"))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(
        ValueError, match="tokenizer has 9196 tokens but the model's vocabulary has 59457"
    ):
        get_model(MMP_CKPT, tokenizer=str(tmp_path))


def test_list_models():
    names = list_models()
    for seed_name in (
        "ofa-base_3rdparty-finetuned_caption",
        "ofa-base_3rdparty-finetuned_refcoco",
        "ofa-base_3rdparty-finetuned_vqa",
        "ofa-base_3rdparty-zeroshot_vqa",
        "ofa-large_3rdparty-zeroshot_vqa",
    ):
        assert seed_name in names
    assert list_models("*refcoco*", task="refcoco")[0].endswith("refcoco")
    assert all(zoo.MODELS[n].task == "vqa" for n in list_models(task="vqa"))
    card = zoo.MODELS["ofa-base_3rdparty-finetuned_refcoco"]
    assert zoo._hash_prefix(card.weights.split("/")[-1]) == "2797d3ab"


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'ofa-bsae'"):
        get_model("ofa-bsae")


# --------------------------------------------------------------------------- downloads
class _Server:
    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                body = outer.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    data = MMP_CKPT.read_bytes()
    name = f"ofa-test_20230418-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    srv = _Server({name: data, "ofa-test_20230418-deadbeef.pth": data})
    srv.name = name
    yield srv
    srv.close()


def test_download_is_verified_cached_and_atomic(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_VL_HOME", str(tmp_path))
    path = zoo.download(server.url + server.name, progress=False)
    assert (
        path == tmp_path / "checkpoints" / server.name
        and path.read_bytes() == MMP_CKPT.read_bytes()
    )
    zoo.download(server.url + server.name, progress=False)
    assert len(server.requests) == 1  # never twice
    with pytest.raises(zoo.DownloadError, match="does not match the deadbeef"):
        zoo.download(server.url + "ofa-test_20230418-deadbeef.pth", progress=False)
    assert sorted(p.name for p in path.parent.iterdir()) == [server.name]  # no partial file left


@pytest.mark.slow
def test_download_unreachable_names_url_and_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_VL_HOME", str(tmp_path))
    srv = _Server({})
    url = srv.url + "missing-12345678.pth"
    srv.close()
    with pytest.raises(zoo.DownloadError) as err:
        zoo.download(url, progress=False)
    msg = str(err.value)
    assert (
        url in msg
        and str(tmp_path / "checkpoints" / "missing-12345678.pth") in msg
        and "\n" not in msg
    )


@pytest.mark.slow
def test_zoo_name_downloads_and_loads(server, tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_VL_HOME", str(tmp_path))
    card = zoo.ModelCard(
        "ofa-test_local", "caption", server.url + server.name, tokenizer=str(HF_DIR)
    )
    monkeypatch.setitem(zoo.MODELS, card.name, card)
    pipe = get_model("ofa-test_local")
    assert pipe.model.cfg.embed_dim == 64 and (tmp_path / "checkpoints" / server.name).is_file()
    assert isinstance(pipe(CAT, **FAST)["pred_caption"], str)


@pytest.mark.slow
def test_pipeline_json_sets_preprocessing(tmp_path):
    import json
    import shutil

    shutil.copy(MMP_CKPT, tmp_path / "model.pth")
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(HF_DIR / f, tmp_path / f)
    (tmp_path / "pipeline.json").write_text(
        json.dumps({"image_size": 96, "interpolation": "bicubic"})
    )
    pipe = get_model(tmp_path, task="refcoco")
    assert (pipe.task.image_size, pipe.task.interpolation) == (96, "bicubic")
    assert len(pipe.tokenizer) == 59457


def test_hub_id_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="OFA-Sys/OFA-nothere") as err:
        get_model("OFA-Sys/OFA-nothere")
    assert "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "int8", "int8-legacy"])
def test_reduced_precision_pipelines(precision):
    fp32 = get_model(MMP_CKPT, tokenizer=HF_DIR, task="caption", image_size=64)
    low = get_model(MMP_CKPT, tokenizer=HF_DIR, task="caption", image_size=64, precision=precision)
    fc1 = low.model.decoder.layers[0].fc1
    if precision == "bf16":  # weights cast once, not autocast; the stream's LNs and logits fp32
        fp32_names = {n for n, p in low.model.named_parameters() if p.dtype == torch.float32}
        assert {p.dtype for p in low.model.parameters()} == {torch.bfloat16, torch.float32}
        assert fp32_names == {
            n for n, _ in fp32.model.named_parameters(remove_duplicate=False) if _fp32_kept(n)
        }
        # the logits' table: bf16 (tied), and an exact fp32 copy for the logits the search keeps
        table = fp32.model.decoder.output_projection.weight
        assert torch.equal(low.model.decoder.logits_fp32, table)
    else:  # fbgemm int8: the output projection (int8), every Linear (int8-legacy)
        quantized = type(fc1).__module__.startswith("torch.ao.nn.quantized")
        assert quantized == (precision == "int8-legacy")
        # int8: and, where the int8 GEMM is exact, part of the encoder as Int8Linear
        int8 = {n for n, m in low.model.named_modules() if isinstance(m, Int8Linear)}
        if precision == "int8" and exact_int8_gemm():
            assert int8 == {n for n, _ in fp32.model.named_modules() if ENCODER_INT8.fullmatch(n)}
            leaves = {n.rsplit(".", 1)[1] for n in int8}
            assert leaves == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1"}
            assert not any(n.startswith("decoder.") for n in int8)
        else:
            assert not int8
        projection = low.model.decoder.output_projection
        assert type(projection).__module__.startswith("torch.ao.nn.quantized")
        # the exact table for the kept logits: the token embedding's, still fp32
        assert low.model.decoder.logits_fp32.dtype == torch.float32
    assert isinstance(low(CAT, **FAST)["pred_caption"], str)
    i = torch.tensor([[0, 99, 473, 5, 2274, 6190, 116, 2]])
    img, _ = preprocess(CAT, 64)
    with torch.no_grad():
        a = low.model(i, img[None].to(model_dtype(low.model)), i).logits.float().log_softmax(-1)
        b = fp32.model(i, img[None], i).logits.log_softmax(-1)
    if precision == "int8" and not exact_int8_gemm():
        assert torch.equal(a, b)  # an fp32 network; teacher forcing reads the exact table
    else:  # close, but reduced: bf16 keeps ~3 significant digits, int8's encoder ~2; logits ~60
        assert (a - b).abs().mean() < 0.05 * b.abs().mean() and not torch.equal(a, b)


def _fp32_kept(name: str) -> bool:
    """The parameters a bf16 model keeps fp32 (precision.cast_weights), by their names."""
    module = name.rsplit(".", 1)[0]  # not the mid or position LNs:
    return module.endswith(("embedding_ln", "attn_ln", "ffn_ln", "final_ln"))


def test_unknown_precision():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, int8, int8-legacy"):
        get_model(MMP_CKPT, tokenizer=HF_DIR, precision="fp8")
