"""Regenerate ``tests/goldens/`` from the reference mmpretrain 1.2.0 (see README.md beside it).

Runs in the reference virtualenv only (never needed by the tests):

    $REFENV/bin/python scripts/goldens/make_goldens.py [weights] [network] [tokenizer]
        [preprocess] [pipelines] [sha256]   # no argument: all, in this order

``weights`` re-seeds the fixture checkpoint (and calibrates its BatchNorm statistics on the test
images); every other step reads the checkpoint that ``tests/golden_weights.py`` rebuilds from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import types
from pathlib import Path

# PyPI's torchvision 0.28 is a CUDA build whose compiled ops do not load against the CPU torch;
# OFA never uses them (README.md here): skip its op registrations.
for _name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
    sys.modules.setdefault(_name, types.ModuleType(_name))

import mmengine  # noqa: E402
import mmpretrain  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmpretrain.apis import (  # noqa: E402
    ImageCaptionInferencer,
    VisualGroundingInferencer,
    VisualQuestionAnsweringInferencer,
)
from mmpretrain.datasets.transforms import processing  # noqa: E402
from mmpretrain.registry import MODELS, TRANSFORMS  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
GOLDENS = TESTS / "goldens"
IMAGES = TESTS / "images"
BPE = ROOT / "src" / "ofa_vl" / "assets" / "ofa-bpe"  # vocab.json + merges.txt (BART BPE)
CONFIGS = Path(mmpretrain.__file__).parent / ".mim" / "configs" / "ofa"
CKPT = TESTS / ".cache" / "ofa-test_seed0.pth"
sys.path.insert(0, str(TESTS))
import golden_weights  # noqa: E402

# The fixture size: the network of every seed config shrunk to this (13 M parameters).
FIXTURE_SIZE = {
    "embedding_dim": 64,
    "encoder_cfg": {
        "embed_images": {"type": "OFAResNet", "depth": 50},
        "num_layers": 2,
        "num_heads": 4,
    },
    "decoder_cfg": {"num_layers": 2, "num_heads": 4},
}
VERSIONS = {
    "python": platform.python_version(),
    "torch": str(torch.__version__),
    "transformers": transformers.__version__,
    "mmengine": mmengine.__version__,
    "mmpretrain": mmpretrain.__version__,
    "numpy": np.__version__,
}


# What caps the kernels below the CPU's best (all three together make an AVX-512 CPU give the
# AVX2 set bit for bit: tests/goldens/avx512/README.md).
KERNEL_LIMITS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")


def machine() -> dict[str, object]:
    """The CPU this ran on: float32 round-off, hence every float golden, depends on its kernels."""
    cpuinfo = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = (fields.get("flags") or fields.get("Features") or "").split()  # x86 / ARM
    simd = ("sse", "ssse", "avx", "fma", "f16c", "amx", "asimd", "sve", "bf16", "i8mm")
    return {
        "cpu": fields.get("model name") or platform.processor(),
        "arch": platform.machine(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the ATen kernels used
        "simd_flags": sorted(f for f in flags if f.startswith(simd)),
        "kernel_limits": {k: os.environ[k] for k in KERNEL_LIMITS if k in os.environ},
    }


MACHINE = machine()
# Where `network` writes: a second CPU's set goes beside the first (tests/goldens/avx512/).
NETWORK_DIR = Path(os.environ.get("OFA_GOLDENS_NETWORK_DIR", GOLDENS))
IMAGE_FILES = ["cat-dog.png", "dog.jpg", "bird.JPEG", "demo.JPEG"]
CAPTION_PROMPT_IDS = [0, 99, 473, 5, 2274, 6190, 116, 2]  # " what does the image describe?"


def fixture_config(name: str, **model: object) -> Config:
    """A seed model's own config file, its network shrunk to the fixture size."""
    cfg = Config.fromfile(str(CONFIGS / f"{name}.py"))
    for key, value in {**FIXTURE_SIZE, **model}.items():
        cfg.model[key] = value  # replaces (the VQA configs' encoder_cfg sets 12 heads)
    cfg.model.tokenizer = {"type": "OFATokenizer", "name_or_path": str(BPE)}
    return cfg


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rgb_images(size: int) -> torch.Tensor:
    """The four test images, PIL bicubic to size x size, (4, 3, size, size) uint8 RGB."""
    arrays = [
        np.asarray(Image.open(IMAGES / f).convert("RGB").resize((size, size), Image.BICUBIC))
        for f in IMAGE_FILES
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    return (images_uint8.float() - 127.5) / 127.5  # the OFA configs' mean = std = 127.5


# --- weights ---------------------------------------------------------------------------------


def make_weights() -> None:
    """Key list from the reference model, random values per key, BatchNorm statistics
    calibrated on the test images (train mode, one batch: running = batch statistics)."""
    model = MODELS.build(fixture_config("ofa-base_finetuned_caption").model)
    ref_sd = {k: v for k, v in model.state_dict().items() if "rp_bucket" not in k}
    keys = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in ref_sd.items()]
    stored = {k: v.clone() for k, v in ref_sd.items() if golden_weights.is_stored(k)}
    sd = golden_weights.generate(keys, stored, golden_weights.SEED)
    model.load_state_dict(sd, strict=False)
    backbone = model.model.encoder.embed_images
    for m in backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives its own statistics
    backbone.train()
    with torch.no_grad():
        backbone(normalize(rgb_images(64)))
    prefix = "model.encoder.embed_images."
    for k, v in backbone.state_dict().items():
        if golden_weights.is_stored(prefix + k):
            stored[prefix + k] = v.clone()
    sd = golden_weights.generate(keys, stored, golden_weights.SEED)
    spec = {
        "format": 1,
        "seed": golden_weights.SEED,
        "keys": keys,
        "stored": stored,
        "sha256": golden_weights.digest(sd),
        "meta": {
            "made_by": "scripts/goldens/make_goldens.py weights",
            "bn_calibration": "train-mode forward of the 4 tests/images, PIL bicubic 64x64",
            "versions": VERSIONS,
            "machine": MACHINE,
        },
    }
    GOLDENS.mkdir(exist_ok=True)
    torch.save(spec, golden_weights.SPEC)
    print("weights:", golden_weights.SPEC.name, spec["sha256"])


def fixture_checkpoint() -> Path:
    return golden_weights.write_checkpoint(CKPT)


def load_fixture(name: str, **model: object):  # type: ignore[no-untyped-def]
    net = MODELS.build(fixture_config(name, **model).model)
    missing, unexpected = net.load_state_dict(golden_weights.build(), strict=False)
    assert not unexpected and all("rp_bucket" in k for k in missing), (missing, unexpected)
    return net.eval()


# --- network goldens -------------------------------------------------------------------------


def make_network() -> None:
    """Encoder outputs, teacher-forced logits and HF generate for two image sizes."""
    net = load_fixture("ofa-base_finetuned_caption")
    model = net.model
    g = torch.Generator().manual_seed(0)
    for size in (64, 96):
        images_uint8 = rgb_images(size)[:2]
        row1 = torch.randint(3, 50265, (4,), generator=g).tolist()
        input_ids = torch.tensor([CAPTION_PROMPT_IDS, [0, *row1, 2, 1, 1]])
        dec = torch.randint(3, 50265, (2, 6), generator=g)
        decoder_input_ids = torch.cat([torch.zeros(2, 1, dtype=torch.long), dec], 1)
        decoder_input_ids[1, 4:] = 1
        decoder_input_ids_nopad = torch.cat(
            [torch.zeros(2, 1, dtype=torch.long), torch.randint(3, 50265, (2, 6), generator=g)], 1
        )
        inputs = {
            "images_uint8": images_uint8,
            "images": normalize(images_uint8),
            "images_mask": torch.ones(2, dtype=torch.bool),
            "input_ids": input_ids,
            "decoder_input_ids": decoder_input_ids,
            "decoder_input_ids_nopad": decoder_input_ids_nopad,
        }
        with torch.no_grad():
            enc = model.encoder(input_ids, inputs["images"], inputs["images_mask"])
            logits = {
                key: model(
                    input_ids=input_ids,
                    images=inputs["images"],
                    images_mask=inputs["images_mask"],
                    decoder_input_ids=inputs[ids],
                    # mmpretrain needs a mask tensor even without padding (all False: no mask)
                    attention_mask=inputs[ids].eq(1),
                ).logits
                for key, ids in (
                    ("logits", "decoder_input_ids"),
                    ("logits_nopad", "decoder_input_ids_nopad"),
                )
            }
            generate = {}
            for mode, beams in (("greedy", 1), ("beam5", 5)):
                kwargs = {"num_beams": beams, "max_new_tokens": 10, "no_repeat_ngram_size": 3}
                out = model.generate(
                    input_ids=input_ids,
                    images=inputs["images"],
                    images_mask=inputs["images_mask"],
                    output_scores=True,
                    return_dict_in_generate=True,
                    **kwargs,
                )
                scores = torch.stack(out.scores, 1)  # (B*beams, steps, V)
                top = scores.topk(10, dim=-1)
                generate[mode] = {
                    "kwargs": kwargs,
                    "sequences": out.sequences,
                    "scores_top10_values": top.values,
                    "scores_top10_indices": top.indices,
                }
                if beams > 1:
                    generate[mode]["sequences_scores"] = out.sequences_scores
        case = {
            "inputs": inputs,
            "encoder": {
                "last_hidden_state": enc.last_hidden_state,
                "padding_mask": enc.padding_mask,
                "position_embedding": enc.position_embedding,
            },
            "decoder": logits,
            "generate": generate,
            "meta": {
                "image_size": size,
                "checkpoint": "tests/golden_weights.py (spec ofa-test_seed0.spec.pt)",
                "model_cfg": FIXTURE_SIZE,
                "generation_config": model.generation_config.to_dict(),
                "versions": VERSIONS,
                "machine": MACHINE,
            },
        }
        path = NETWORK_DIR / f"ofa-test_seed0_img{size}.pt"
        torch.save(case, path)
        print("network:", path.name, generate["beam5"]["sequences"].tolist())


# --- tokenizer -------------------------------------------------------------------------------

TOKENIZER_TEXTS = [
    " what does the image describe?",
    ' which region does the text " man in red shirt " describe?',
    " what color is the cat?",
    " how many people are in the picture?",
    ' does the image describe " two dogs playing in the snow "?',
    ' can image and text1 " a woman riding a horse " imply text2 " a person is outside "?',
    "  what does the region describe? region: <bin_12> <bin_340> <bin_511> <bin_998>",
    " what is the image in the middle part?",
    " what are the objects in the image?",
    ' what is the summary of article " the quick brown fox jumps over the lazy dog . "?',
    " what is the complete image? caption: a red double decker bus",
    "a dog and a kitten sitting next to each other",
    "A Dog, and a KITTEN!!! sitting next-to each other...",
    " is this a vegetarian pizza? object: pizza cheese tomato plate table",
    "",
    " ",
    "hello   world",
    "tabs\tand\nnewlines",
    "café naïve résumé",
    "中文字符",
    "emoji 😀 🐱",
    "numbers 12345 3.14159 1,000,000",
    "<code_0><code_8191> <bin_0><bin_999>",
    "don't can't won't it's",
    "e-mail user@example.com http://example.com/a?b=c",
    ' what is the complete text of " the cat sat on the mat "?',
    "quotes \"double\" 'single' `back`",
    "   leading and trailing spaces   ",
    "UPPER lower MiXeD",
    "a" * 50,
]


def make_tokenizer() -> None:
    from mmpretrain.registry import TOKENIZER

    tok = TOKENIZER.build({"type": "OFATokenizer", "name_or_path": str(BPE)})
    cases = []
    for text in TOKENIZER_TEXTS:
        ids = tok(text)["input_ids"]
        cases.append(
            {
                "text": text,
                "ids": ids,
                "ids_no_special": tok(text, add_special_tokens=False)["input_ids"],
                "decoded": tok.decode(ids, skip_special_tokens=True),
            }
        )
    meta = {
        "tokenizer": "mmpretrain 1.2.0 OFATokenizer (transformers BartTokenizer over "
        "src/ofa_vl/assets/ofa-bpe + <code_0..8191> + <bin_0..999>)",
        "vocab_size": len(tok),
        "code_offset": tok.code_offset,
        "bin_offset": tok.bin_offset,
        "fields": "ids = tok(text)['input_ids']; ids_no_special = tok(text, "
        "add_special_tokens=False); decoded = tok.decode(ids, skip_special_tokens=True)",
        "versions": VERSIONS,
        "machine": MACHINE,
    }
    path = GOLDENS / "ofa_tokenizer_cases.json"
    path.write_text(json.dumps({"meta": meta, "cases": cases}, indent=1, ensure_ascii=False) + "\n")
    print("tokenizer:", len(cases), "cases")


# --- preprocessing ---------------------------------------------------------------------------

PREPROCESS_TASKS = {
    "caption": "ofa-base_finetuned_caption",
    "refcoco": "ofa-base_finetuned_refcoco",
    "vqa": "ofa-base_finetuned_vqa",
}


def make_preprocess() -> None:
    """Each image through LoadImageFromFile + the Resize of each config's test pipeline."""
    out = GOLDENS / "preprocess"
    out.mkdir(exist_ok=True)
    meta: dict[str, object] = {}
    for task, name in PREPROCESS_TASKS.items():
        steps = Config.fromfile(str(CONFIGS / f"{name}.py")).test_pipeline
        load, resize = (TRANSFORMS.build(s) for s in steps[:2])
        assert type(resize).__name__ == "Resize", steps
        for image in IMAGE_FILES:
            r = resize(load({"img_path": str(IMAGES / image)}))
            # BGR -> RGB, as the data preprocessor's to_rgb
            rgb = np.ascontiguousarray(r["img"][..., ::-1])
            png = f"{image}.{task}.png"
            Image.fromarray(rgb).save(out / png, optimize=True)
            meta[f"{image}/{task}"] = {
                "resized_rgb": png,
                "scale_factor": [float(s) for s in r["scale_factor"]],
                "ori_shape": list(r["ori_shape"]),
                "pipeline": [str(s) for s in steps[:2]],
            }
    (out / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    print("preprocess:", len(meta), "cases")


# --- whole pipelines -------------------------------------------------------------------------

ANSWERS = ["yes", "no", "cat", "dog", "two", "red", "black and white", "on the left", "a bird", "2"]
OBJECTS = {
    "cat-dog.png": ["cat", "dog", "couch"],
    "dog.jpg": ["dog", "grass", "fence"],
    "bird.JPEG": ["bird", "branch"],
    "demo.JPEG": ["car", "road", "tree", "sky"],
}
QUESTIONS = [
    "What COLOR is the cat??",
    "  how many Dogs are there ?  ",
    "is there a Cat?!",
    "What's this, a BIRD?",
]
REGIONS = ["  the dog ,on the LEFT. ", "The Cat!", "a small bird (on a branch)", "man in red shirt"]
# Random weights never say </s>: the zero-shot config's 200 new tokens x 20 beams would take
# minutes a case (mmpretrain's KV cache never engages). Its one change besides the size; the
# test passes the same max_new_tokens at call time.
GENERATION_OVERRIDES = {"ofa-base_3rdparty-zeroshot_vqa": {"max_new_tokens": 16}}
PIPELINES = {
    # zoo name in ofa-vl: (config file, inferencer, text field)
    "ofa-base_3rdparty-finetuned_caption": (
        "ofa-base_finetuned_caption",
        ImageCaptionInferencer,
        None,
    ),
    "ofa-base_3rdparty-finetuned_refcoco": (
        "ofa-base_finetuned_refcoco",
        VisualGroundingInferencer,
        "text",
    ),
    "ofa-base_3rdparty-finetuned_vqa": (
        "ofa-base_finetuned_vqa",
        VisualQuestionAnsweringInferencer,
        "question",
    ),
    "ofa-base_3rdparty-zeroshot_vqa": (
        "ofa-base_zeroshot_vqa",
        VisualQuestionAnsweringInferencer,
        "question",
    ),
}


_add_objects_buggy = processing.OFAAddObjects.transform


def _add_objects_fixed(self, results: dict) -> dict:
    """mmpretrain 1.2.0's ``OFAAddObjects.transform`` builds the prompt but returns nothing (so
    the pipeline yields None); the intended behaviour returns the dict it built."""
    _add_objects_buggy(self, results)
    return results


def _jsonable(result: dict) -> dict:
    return {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in result.items()}


def _recording(inferencer) -> dict:  # type: ignore[no-untyped-def]
    """Record the encoder prompt ids and the generated tokens of the inferencer's model."""
    seen: dict[str, list] = {}
    model = inferencer.model
    preprocess_text, generate = model.preprocess_text, model.model.generate

    def text(*args, **kwargs):  # type: ignore[no-untyped-def]
        ids = preprocess_text(*args, **kwargs)
        seen["prompt_ids"] = ids.tolist()
        return ids

    def gen(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = generate(*args, **kwargs)
        seen["tokens"] = out.tolist()
        return out

    model.preprocess_text, model.model.generate = text, gen
    return seen


def make_pipelines() -> None:
    processing.OFAAddObjects.transform = _add_objects_fixed
    ckpt = str(fixture_checkpoint())
    cases = []
    for zoo_name, (config, inferencer_cls, field) in PIPELINES.items():
        extra = {"ans2label": ANSWERS} if zoo_name.endswith("finetuned_vqa") else {}
        cfg = fixture_config(config, **extra)
        cfg.model.generation_cfg.update(GENERATION_OVERRIDES.get(zoo_name, {}))
        inferencer = inferencer_cls(cfg, pretrained=ckpt, device="cpu")
        seen = _recording(inferencer)
        texts = {"text": REGIONS, "question": QUESTIONS}.get(field or "", [None] * 4)
        for image, text in zip(IMAGE_FILES, texts):
            path = str(IMAGES / image)
            inputs: dict[str, object] = {"image": image}
            if field is None:
                result = inferencer(path)[0]
            elif field == "text":
                inputs["text"] = text
                result = inferencer(path, text)[0]
            else:
                inputs["question"] = text
                objects = OBJECTS[image] if "finetuned" in zoo_name else None
                if objects:
                    inputs["objects"] = objects
                result = inferencer(path, text, objects=objects)[0]
            cases.append(
                {
                    "model": zoo_name,
                    "config": f"configs/ofa/{config}.py",
                    "generation_overrides": GENERATION_OVERRIDES.get(zoo_name, {}),
                    "inputs": inputs,
                    "result": _jsonable(result),
                    # batch of one: the encoder prompt ids and generate's raw output (with the
                    # forced decoder prompt, before OFA.predict blanks it with <pad>)
                    "prompt_ids": seen["prompt_ids"][0],
                    "tokens": seen["tokens"][0],
                }
            )
            print(zoo_name, inputs, "->", cases[-1]["result"], flush=True)
    doc = {
        "meta": {
            "made_by": "scripts/goldens/make_goldens.py pipelines",
            "how": "mmpretrain's inferencer built from the config file, network shrunk to the "
            "fixture size (FIXTURE_SIZE), tokenizer = src/ofa_vl/assets/ofa-bpe, weights = "
            "tests/golden_weights.py; batch_size 1; OFAAddObjects.transform made to return its dict",
            "fixture_size": FIXTURE_SIZE,
            "answers": ANSWERS,
            "generation_cfg": {
                k: dict(fixture_config(v[0]).model.generation_cfg) for k, v in PIPELINES.items()
            },
            "versions": VERSIONS,
            "machine": MACHINE,
        },
        "cases": cases,
    }
    path = GOLDENS / "pipelines.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print("pipelines:", len(cases), "cases")


SHA_MARKER = "<!-- sha256: made by make_goldens.py -->"


def record_sha256() -> None:
    """Rewrite the sha256 table at the end of tests/goldens/README.md."""
    files = sorted(p for d in (GOLDENS, IMAGES) for p in d.rglob("*") if p.is_file())
    lines = [f"{sha256(p)}  {p.relative_to(ROOT)}" for p in files if p.name != "README.md"]
    readme = GOLDENS / "README.md"
    head = readme.read_text().split(SHA_MARKER)[0]
    readme.write_text(head + SHA_MARKER + "\n```\n" + "\n".join(lines) + "\n```\n")
    print("\n".join(lines))


STEPS = {
    "weights": make_weights,
    "network": make_network,
    "tokenizer": make_tokenizer,
    "preprocess": make_preprocess,
    "pipelines": make_pipelines,
    "sha256": record_sha256,
}

if __name__ == "__main__":
    torch.set_grad_enabled(False)
    for step in sys.argv[1:] or list(STEPS):
        STEPS[step]()
