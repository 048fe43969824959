"""``ofa predict`` (ofa_vl.bulk): every input kind and output format on a generated shapes
collection, bad records reported without stopping, resume after SIGKILL, torchrun sharding.

The collection is small (18 images in nested folders, plus a corrupt one, a missing path and a bad
row) to keep CI time; the code paths do not depend on its size (chunks of 4 records)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ofa_vl import get_model, predict
from ofa_vl.bulk.inputs import expand_braces, read_inputs
from ofa_vl.cli import main
from ofa_vl.errors import OFAValueError
from ofa_vl.shapes.world import generate_scene, render_scene

SRC = Path(__file__).resolve().parents[1] / "src"
MODEL = "ofa-tiny_shapes"
N = 18  # good images
CHUNK, BATCH = 4, 3  # chunks and batches that do not divide each other or N
CHUNKS = -(-(N + 1) // CHUNK)  # of the folder tree: its images and the corrupt one
QUESTIONS = ("how many shapes are there?", "what color is the circle?", "is there a square?")


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    render_scene(generate_scene(np.random.default_rng([7, i]), size=64)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pipe():
    return get_model(MODEL, device="cpu")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The collection: folder tree, path list, Parquet table of bytes, two WebDataset shards."""
    root = tmp_path_factory.mktemp("collection")
    images = [_png(i) for i in range(N)]
    for i, data in enumerate(images):
        folder = root / "tree" / f"part{i % 3}" / ("deep" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.png").write_bytes(data)
    (root / "tree" / "part0" / "corrupt.png").write_bytes(b"\x89PNG not really")
    paths = sorted(str(p.relative_to(root)) for p in (root / "tree").rglob("0*.png"))
    (root / "list.txt").write_text("\n".join([*paths[:5], "tree/missing.png", *paths[5:]]) + "\n")
    rows = [{"id": f"img{i}", "image": images[i], "question": QUESTIONS[i % 3]} for i in range(N)]
    rows.insert(4, {"id": "bad-row", "image": None, "question": QUESTIONS[0]})
    pq.write_table(pa.Table.from_pylist(rows), root / "table.parquet")
    lines = [json.dumps({"file_name": f"tree/part0/{i:03d}.png", "question": QUESTIONS[i % 3]})
             for i in range(0, N, 6)]  # fmt: skip
    lines.insert(2, '{"file_name": "tree/part0/006.png", "question": ')  # a torn line
    (root / "table.jsonl").write_text("\n".join(lines) + "\n")
    with (root / "table.csv").open("w") as f:
        f.write("file_name,question\n" + "".join(f"tree/part0/{i:03d}.png,{QUESTIONS[i % 3]}\n"
                                                  for i in range(0, N, 6)))  # fmt: skip
    for shard in range(2):
        with tarfile.open(root / f"shard-{shard:03d}.tar", "w") as tar:
            for i in range(shard, N, 2):
                meta = json.dumps({"question": QUESTIONS[i % 3]}).encode()
                for ext, data in (("png", images[i]), ("json", meta)):
                    info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread, as the processes of torchrun, Ray and ``_env`` run: float sums split
    over another number of threads differ in the last bits, and results are compared byte for
    byte."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_process(pipe, world, tmp_path_factory) -> Path:
    """The folder tree's captions by one process, no loader worker."""
    out = tmp_path_factory.mktemp("one") / "one.jsonl"
    with one_thread():
        _run(pipe, str(world / "tree"), out)
    return out


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(pipe, inputs, out: Path, **kwargs):
    return predict(pipe, inputs, out, chunk_size=CHUNK, batch_size=BATCH, workers=0,
                   progress=False, **kwargs)  # fmt: skip


def test_braces_and_the_order_of_a_folder_tree(world):
    assert expand_braces("s-{008..010}.tar") == ["s-008.tar", "s-009.tar", "s-010.tar"]
    assert expand_braces("{a,b}{1..2}") == ["a1", "a2", "b1", "b2"]
    ids = [r.id for r in read_inputs([str(world / "tree")])]
    tree = world / "tree"
    folders = sorted(d for d in [tree, *tree.rglob("*")] if d.is_dir())  # depth first
    walked = [sorted(str(f) for f in d.iterdir() if f.is_file()) for d in folders]
    assert ids == [f for files in walked for f in files]  # a folder's files, then its folders
    assert len(ids) == N + 1 and ids[3].endswith("part0/corrupt.png")  # after 0, 6, 12
    globbed = [r.id for r in read_inputs([str(tree / "**" / "0*.png")])]
    assert globbed == sorted(i for i in ids if "corrupt" not in i)
    assert [r.id for r in read_inputs([str(world / "shard-{000..001}.tar")])][:3] == [
        "s000", "s002", "s004"]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="no such file, directory, shard or pattern"):
        list(read_inputs([str(world / "nothing-*.tar")]))


def test_every_input_kind_gives_the_captions_of_its_images(pipe, world, tmp_path):
    summary = _run(pipe, str(world / "tree"), tmp_path / "tree.jsonl", task="caption")
    tree = _rows(tmp_path / "tree.jsonl")
    assert (summary.rows, summary.failed, summary.exit_status) == (N, 1, 1)
    errors = _rows(tmp_path / "tree.jsonl.errors.jsonl")
    assert [e["id"] for e in errors] == [str(world / "tree/part0/corrupt.png")]
    assert "not a readable image" in errors[0]["error"]
    # each caption is the pipeline's own for that file, one image at a time
    for row in tree[::9]:
        assert row["pred_caption"] == pipe(row["id"])["pred_caption"]
        assert row["score"] == pytest.approx(pipe.run([row["id"]])[0].score, abs=1e-4)
    by_file = {Path(r["id"]).name: r["pred_caption"] for r in tree}

    _run(pipe, str(world / "list.txt"), tmp_path / "list.jsonl")
    listed = _rows(tmp_path / "list.jsonl")
    assert [r["id"] for r in listed] == sorted(str(Path(r["id"]).relative_to(world)) for r in tree)
    missing = _rows(tmp_path / "list.jsonl.errors.jsonl")
    assert missing[0]["id"] == "tree/missing.png" and "not found" in missing[0]["error"]

    _run(pipe, str(world / "table.parquet"), tmp_path / "table.jsonl")
    _run(pipe, str(world / "shard-{000..001}.tar"), tmp_path / "shards.jsonl")
    for name, key in (
        ("table", lambda r: int(r["id"][3:])),
        ("shards", lambda r: int(r["id"][1:])),
    ):
        rows = _rows(tmp_path / f"{name}.jsonl")
        assert sorted(map(key, rows)) == list(range(N))
        assert all(r["pred_caption"] == by_file[f"{key(r):03d}.png"] for r in rows)
    bad = _rows(tmp_path / "table.jsonl.errors.jsonl")
    assert [e["id"] for e in bad] == ["bad-row"] and "no image" in bad[0]["error"]


def test_questions_per_row_or_for_all_and_the_output_formats(pipe, world, tmp_path):
    vqa = pipe.with_task("vqa")
    out = tmp_path / "answers.parquet"
    summary = _run(vqa, str(world / "table.parquet"), out)  # .parquet: the format from the suffix
    table = pq.read_table(out).to_pylist()
    assert summary.rows == len(table) == N and summary.failed == 1
    assert [r["question"] for r in table] == [QUESTIONS[i % 3] for i in range(N)]
    for row in table[:4]:
        i = int(row["id"][3:])
        assert row["pred_answer"] == vqa(_png(i), question=QUESTIONS[i % 3])["pred_answer"]
    for name in ("table.jsonl", "table.csv"):  # paths relative to the table, as HF's file_name
        done = _run(vqa, str(world / name), tmp_path / f"{name}.jsonl")
        answers = _rows(tmp_path / f"{name}.jsonl")
        assert done.rows == len(range(0, N, 6)) and done.failed == (name == "table.jsonl")
        by_id = {f"img{int(Path(r['id']).stem)}": r["pred_answer"] for r in answers}
        assert by_id == {r["id"]: r["pred_answer"] for r in table if r["id"] in by_id}
    torn = _rows(tmp_path / "table.jsonl.jsonl.errors.jsonl")
    assert torn[0]["id"].endswith("table.jsonl:3") and "not a JSON object" in torn[0]["error"]
    asked = "how many circles are there?"  # one question for the shards' records that have none
    _run(vqa, str(world / "shard-000.tar"), tmp_path / "all.jsonl", fields={"question": asked})
    assert {r["question"] for r in _rows(tmp_path / "all.jsonl")} <= set(QUESTIONS)  # rows win
    _run(vqa, str(world / "tree/part1"), tmp_path / "same.jsonl", fields={"question": asked})
    assert {r["question"] for r in _rows(tmp_path / "same.jsonl")} == {asked}
    # a task field missing with no default: each record reported, none predicted
    lost = _run(vqa, str(world / "tree/part1"), tmp_path / "none.jsonl")
    assert (lost.rows, lost.failed, lost.exit_status) == (0, N // 3, 2)

    ground = pipe.with_task("refcoco")
    _run(ground, str(world / "tree/part2"), tmp_path / "boxes.json", format="coco",
         fields={"text": "the circle"})  # fmt: skip
    coco = json.loads((tmp_path / "boxes.json").read_text())
    ids = sorted(int(Path(p).stem) for p in (world / "tree/part2").rglob("0*.png"))
    assert sorted(e["image_id"] for e in coco) == ids
    assert all(len(e["bbox"]) == 4 and e["bbox"][2] >= 0 and e["category_id"] == 1 for e in coco)
    with pytest.raises(OFAValueError, match="coco holds captions or boxes"):
        _run(vqa, str(world / "tree"), tmp_path / "x.json", format="coco")


def test_every_config_field_is_a_flag_and_a_bad_option_is_one_line(monkeypatch, tmp_path):
    import argparse
    import dataclasses

    import ofa_vl.bulk
    from ofa_vl.bulk import PredictConfig, PredictSummary
    from ofa_vl.cli import build_parser

    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in commands.choices["predict"]._actions}
    names = {f.name for f in dataclasses.fields(PredictConfig)}
    assert names - {"generation"} <= dests and "decoding" in dests  # generation: decoding flags
    seen: list[PredictConfig] = []

    def stub(model, inputs, out, config: PredictConfig) -> PredictSummary:
        seen.append(config)
        return PredictSummary(Path(out), Path("e"), 0, 0, 0, 0, 1.0)

    monkeypatch.setattr(ofa_vl.bulk, "predict", stub)
    flags = ["--field", "question=hi", "--batch-size", "3", "--precision", "bf16", "--beams", "2",
             "--no-progress", "--engine", "ray"]  # fmt: skip
    assert main(["predict", MODEL, "in", "--out", "o", *flags]) == 0
    assert seen == [PredictConfig(fields={"question": "hi"}, batch_size=3, precision="bf16",
                                  generation={"num_beams": 2}, progress=False, engine="ray")]  # fmt: skip
    monkeypatch.undo()
    with pytest.raises(
        OFAValueError, match=r"unknown predict option\(s\) batch; valid: task, "
    ) as e:
        predict(MODEL, "in", tmp_path / "o", batch=3)
    with pytest.raises(OFAValueError, match="workers must be at least 0") as bad:
        PredictConfig(workers=-1)
    assert "\n" not in str(e.value) + str(bad.value)


def _cli(world: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", MODEL, str(world / "tree"), "--out", str(out), "--chunk-size",
            str(CHUNK), "--batch-size", str(BATCH), "--workers", "1", *extra]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.multiprocess
def test_resume_after_sigkill_recomputes_and_duplicates_nothing(pipe, world, tmp_path, capsys):
    with one_thread():
        _sigkill_then_resume(world, tmp_path, capsys)


def _sigkill_then_resume(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reference = tmp_path / "reference.jsonl"
    assert main(_cli(world, reference, "--workers", "0")) == 1  # the corrupt image
    out = tmp_path / "killed.jsonl"
    cmd = [sys.executable, "-m", "ofa_vl", *_cli(world, out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = Path(f"{out}.parts")
    deadline = time.monotonic() + 120
    while not (parts.is_dir() and any(parts.glob("chunk-*[0-9].jsonl"))):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = {p.name: p.stat().st_mtime_ns for p in parts.glob("chunk-*")}
    assert not out.exists() and 1 <= len([n for n in written if "errors" not in n]) < CHUNKS

    capsys.readouterr()
    assert main(_cli(world, out)) == 2
    assert "pass --resume to continue" in capsys.readouterr().err
    assert main(_cli(world, out, "--resume", "--beams", "2")) == 2
    assert "other settings {'num_beams': (5, 2)}" in capsys.readouterr().err
    assert main(_cli(world, out, "--resume", "--workers", "2")) == 1  # workers: not a setting
    assert f"{N} rows" in capsys.readouterr().err
    assert out.read_text() == reference.read_text()
    assert Path(f"{out}.errors.jsonl").read_text() == Path(f"{reference}.errors.jsonl").read_text()
    # the chunks done before the kill were not written again
    assert {n: parts.joinpath(n).stat().st_mtime_ns for n in written} == written


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_two_processes_give_the_rows_of_one(one_process, world, tmp_path):
    one = one_process
    two = tmp_path / "two.jsonl"
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    cmd = [sys.executable, *torchrun, "-m", "ofa_vl", *_cli(world, two, "--workers", "0")]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stderr  # the corrupt image
    assert done.stderr.count(f"ofa predict: {N} rows") == 1  # the summary, by rank 0 only
    assert two.read_text() == one.read_text()
    chunks = sorted(p.name for p in Path(f"{two}.parts").glob("chunk-*[0-9].jsonl"))
    assert len(chunks) == CHUNKS  # written by both ranks


@pytest.mark.slow
@pytest.mark.multiprocess
def test_ray_local_mode_on_two_workers_gives_the_rows_of_one_process(one_process, world, tmp_path):
    import ray  # the ray extra

    one = one_process
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray.jsonl"
        summary = predict(MODEL, str(world / "tree"), out, chunk_size=CHUNK, batch_size=BATCH,
                          engine="ray", actors=2, device="cpu", progress=False)  # fmt: skip
    finally:
        ray.shutdown()
    assert (summary.rows, summary.failed) == (N, 1)
    assert out.read_text() == one.read_text()
    assert Path(f"{out}.errors.jsonl").read_text() == Path(f"{one}.errors.jsonl").read_text()
