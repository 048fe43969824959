"""The ``ofa`` command through a subprocess, including its errors (one line, no traceback)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import IMAGES, MMP_CKPT
from PIL import Image

from ofa_vl.tokenizer import ENGLISH_BPE

# tier: the whole module runs processes or trains (pyproject markers)
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

HF_DIR = str(ENGLISH_BPE)
FIXTURE = ["--model", str(MMP_CKPT), "--tokenizer", HF_DIR, "--max-new-tokens", "4", "--beams", "2"]


def ofa(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ofa_vl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    for i, color in enumerate(("red", "blue")):
        Image.new("RGB", (80, 60), color).save(d / f"im{i}.png")
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.mark.parametrize("args", [["models"], ["caption", *FIXTURE, str(IMAGES / "dog.jpg")]])
def test_a_closed_pipe_ends_the_command_quietly(args):
    """``ofa models | head``: once the reader is gone, exit 0 with nothing on stderr (no
    BrokenPipeError traceback). The read end is closed before the command writes a byte."""
    read, write = os.pipe()
    os.close(read)
    with subprocess.Popen([sys.executable, "-m", "ofa_vl", *args], stdout=write,
                          stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
        os.close(write)
        _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (0, "")


def test_caption_directory_json(image_dir):
    r = ofa("caption", str(image_dir), *FIXTURE, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [os.path.basename(x["image"]) for x in rows] == ["im0.png", "im1.png"]
    assert all(isinstance(x["pred_caption"], str) for x in rows)
    assert all(isinstance(x["score"], float) and x["score"] <= 0 for x in rows)  # log-probability


def test_ground_glob_and_save(image_dir, tmp_path):
    out = tmp_path / "boxed.png"
    r = ofa(
        "ground", str(image_dir / "im0.*"), "--text", "the red thing", "--save", str(out), *FIXTURE
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(image_dir / "im0.png") + ": ")
    assert Image.open(out).size == (80, 60)


def test_vqa_text_output(image_dir):
    r = ofa("vqa", str(image_dir / "im1.png"), "--question", "what color is it?", *FIXTURE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(str(image_dir / "im1.png") + ":")


def test_models_listing():
    r = ofa("models", "ofa-base_3rdparty*")
    assert r.returncode == 0
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == [
        "ofa-base_3rdparty-finetuned_caption",
        "ofa-base_3rdparty-finetuned_refcoco",
        "ofa-base_3rdparty-finetuned_vqa",
        "ofa-base_3rdparty-zeroshot_vqa",
    ]
    assert ofa("models", "no-such-model*").returncode == 1


def test_convert(tmp_path):
    r = ofa("convert", str(MMP_CKPT), str(tmp_path / "m.safetensors"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.safetensors").stat().st_size > 1_000_000


@pytest.mark.parametrize(
    "args,needle",
    [
        (["caption", "/no/such/image.png", *FIXTURE], "/no/such/image.png: no such image"),
        (["caption", str(MMP_CKPT), *FIXTURE], "not a readable image"),
        (
            ["caption", str(IMAGES / "dog.jpg"), "--model", "ofa-bsae"],
            "unknown model 'ofa-bsae'",
        ),
        (
            ["vqa", str(IMAGES / "dog.jpg"), "--question", " ", *FIXTURE],
            "needs a non-empty 'question'",
        ),
        (
            ["convert", str(IMAGES / "dog.jpg"), "x.safetensors"],
            "not a readable checkpoint",
        ),
    ],
)
def test_errors_are_one_line(args, needle, tmp_path):
    r = ofa(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ofa: error:") and needle in lines[0], r.stderr


def test_debug_shows_traceback():
    r = ofa("--debug", "caption", "/no/such/image.png", *FIXTURE)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_decoding_flags_and_their_kept_alias():
    from ofa_vl.cli import build_parser
    from ofa_vl.cli.common import decoding

    parse = build_parser().parse_args
    args = parse(["caption", "x.png", "--beams", "2", "--n-best", "2", "--decoding", "top_k=3"])
    assert decoding(args) == {"num_beams": 2, "num_return_sequences": 2, "top_k": 3}
    assert decoding(parse(["test", "m", "--num-beams", "4", "--max-new-tokens", "9"])) == {
        "num_beams": 4, "max_new_tokens": 9
    }  # fmt: skip
    assert decoding(parse(["predict", "m", "in", "--out", "o"])) == {}  # the model's defaults


def test_runtime_choices_are_the_library_ones() -> None:
    """``--precision`` / ``--backend`` choices are written out (``--help`` imports no torch): they
    must stay the library's."""
    import typing

    from ofa_vl.api import BACKENDS
    from ofa_vl.cli.common import Runtime
    from ofa_vl.model.precision import PRECISIONS

    hints = typing.get_type_hints(Runtime)
    assert typing.get_args(hints["precision"]) == PRECISIONS
    assert typing.get_args(hints["backend"]) == tuple(BACKENDS)
