"""OFATokenizer against mmpretrain's tokenizer cases, bins <-> boxes, and hub downloads."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest
import torch
from conftest import GOLDENS
from tokenizers import Tokenizer, models, pre_tokenizers

from ofa_vl.hub import OFAHubError
from ofa_vl.tokenizer import ENGLISH_BPE, OFATokenizer, bins_to_box, box_to_bins

BPE_DIR = ENGLISH_BPE
CASES = json.loads((GOLDENS / "ofa_tokenizer_cases.json").read_text())
REPO_ID = "OFA-Sys/OFA-base"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def tok() -> OFATokenizer:
    return OFATokenizer.from_pretrained(BPE_DIR)


def test_layout_matches_fixture(tok: OFATokenizer) -> None:
    meta = CASES["meta"]
    assert (len(tok), tok.vocab_size) == (meta["vocab_size"], meta["vocab_size"])
    assert (tok.code_offset, tok.bin_offset) == (meta["code_offset"], meta["bin_offset"])
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
    assert (tok.num_codes, tok.num_bins) == (8192, 1000)
    assert tok.encode("<mask>", add_special_tokens=False) == [50264]
    assert tok.encode("<code_8191><bin_999>", add_special_tokens=False) == [58456, 59456]


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: repr(c["text"])[:40])
def test_fixture_case(tok: OFATokenizer, case: dict) -> None:
    assert tok.encode(case["text"]) == case["ids"]
    assert tok.encode(case["text"], add_special_tokens=False) == case["ids_no_special"]
    assert tok.decode(case["ids"], skip_special_tokens=True) == case["decoded"]


def test_mask_eats_the_space_before_it(tok: OFATokenizer) -> None:
    # BART: <mask> is AddedToken(lstrip=True): " a <mask>" has no lone-space token
    assert tok.encode(" a <mask> b", add_special_tokens=False) == [10, 50264, 741]


def test_batch_is_right_padded(tok: OFATokenizer) -> None:
    texts = [" what does the image describe?", " yes"]
    out = tok(texts)
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == torch.long and ids.shape == (2, 8)
    assert ids[0].tolist() == CASES["cases"][0]["ids"]
    assert ids[1].tolist() == [0, 4420, 2, 1, 1, 1, 1, 1]
    assert mask[1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0] and mask[0].all()

    as_lists = tok(texts, return_tensors=None)
    assert as_lists["input_ids"] == ids.tolist() and as_lists["attention_mask"] == mask.tolist()
    unpadded = tok(texts, padding=False, return_tensors=None)
    assert unpadded["input_ids"][1] == [0, 4420, 2] and unpadded["attention_mask"][1] == [1, 1, 1]
    with pytest.raises(ValueError, match="padding=True"):
        tok(texts, padding=False)

    single = tok(" yes", return_tensors=None)
    assert single == {"input_ids": [0, 4420, 2], "attention_mask": [1, 1, 1]}
    assert tok(" yes")["input_ids"].shape == (1, 3)
    assert tok(" yes", add_special_tokens=False, return_tensors=None)["input_ids"] == [4420]


def test_decode_round_trip(tok: OFATokenizer) -> None:
    texts = [" a dog and a kitten", "  two spaces", "café 中文 😀", " region: <bin_3> <bin_7>"]
    batch = tok(texts)["input_ids"]
    assert tok.batch_decode(batch) == texts  # tensor rows, padding skipped
    assert [tok.decode(tok.encode(t)) for t in texts] == texts
    assert tok.decode(torch.tensor([0, 4420, 2, 1])) == " yes"
    assert tok.decode([0, 4420, 2, 1], skip_special_tokens=False) == "<s> yes</s><pad>"
    assert tok.decode([0, 5, 479, 2]) == " the." and tok.decode([5, 479], False, False) == " the ."
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([59457])


def test_truncation(tok: OFATokenizer) -> None:
    text = " what does the image describe?"  # 8 ids with <s> and </s>
    out = tok([text, " yes"], max_length=5, truncation=True, return_tensors=None)
    assert out["input_ids"] == [[0, 99, 473, 5, 2], [0, 4420, 2, 1, 1]]
    assert tok(text, max_length=8)["input_ids"].shape == (1, 8)  # exactly at the limit: fine
    with pytest.raises(ValueError, match=r"text 0 is 8 tokens long, more than max_length=5"):
        tok(text, max_length=5)
    with pytest.raises(ValueError, match="no room"):
        tok(text, max_length=1, truncation=True)


def test_save_and_reload_give_identical_ids(tok: OFATokenizer, tmp_path: Path) -> None:
    tok.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "ofa_tokenizer.json").read_text()) == {
        "num_codes": 8192,
        "num_bins": 1000,
    }
    again = OFATokenizer.from_pretrained(tmp_path / "saved")
    assert (len(again), again.code_offset, again.bin_offset) == (59457, 50265, 58457)
    for case in CASES["cases"]:
        assert again.encode(case["text"]) == case["ids"]
        assert again.decode(case["ids"]) == case["decoded"]


def test_small_word_level_tokenizer_with_side_file(tmp_path: Path) -> None:
    words = ["<s>", "<pad>", "</s>", "<unk>", "what", "is", "it", "?"]
    base = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    base.pre_tokenizer = pre_tokenizers.Whitespace()
    base.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "ofa_tokenizer.json").write_text('{"num_codes": 0, "num_bins": 16}')

    small = OFATokenizer.from_pretrained(tmp_path)
    assert (len(small), small.num_codes, small.code_offset, small.bin_offset) == (24, 0, 8, 8)
    assert small.encode("what is it ?<bin_3> <bin_15>") == [0, 4, 5, 6, 7, 11, 23, 2]
    assert small.encode("what zzz") == [0, 4, 3, 2]
    assert small.decode([0, 4, 5, 11, 2]) == "what is <bin_3>"
    assert OFATokenizer.from_pretrained(tmp_path, num_bins=4).vocab_size == 12  # argument wins


def test_missing_files_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"holds none of: vocab\.json \+ merges\.txt"):
        OFATokenizer.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither an existing directory nor a hub id"):
        OFATokenizer.from_pretrained(tmp_path / "no" / "such" / "dir")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        OFATokenizer.from_pretrained(tmp_path / "file.txt")
    (tmp_path / "vocab.json").write_text('{"a": 0}')
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="lacks <s>"):
        OFATokenizer.from_pretrained(tmp_path)


def test_box_to_bins_official_formula() -> None:
    # round(c * ratio / 512 * 999): 100*0.8/512*999 = 156.09, 50*(512/480)/512*999 = 104.06,
    # 300*0.8/512*999 = 468.28, 420*(512/480)/512*999 = 874.13
    assert box_to_bins([100, 50, 300, 420], 512 / 640, 512 / 480) == [156, 104, 468, 874]
    assert box_to_bins([0, 0, 512, 512], 1.0, 1.0) == [0, 0, 999, 999]
    assert box_to_bins([-10, 0, 600, 512], 1.0, 1.0) == [0, 0, 999, 999]  # clamped
    # ties round half to even like torch .round(): c * 512 / 512 = 0.5, 1.5, 2.5, 3.5
    assert box_to_bins([0.5, 1.5, 2.5, 3.5], 1.0, 1.0, num_bins=513) == [0, 2, 2, 4]


def test_bins_to_box_formulas() -> None:
    bins, w, h = [156, 104, 468, 874], 512 / 640, 512 / 480
    official = [b / 999 * 512 / r for b, r in zip(bins, [w, h, w, h], strict=True)]
    mmpretrain = [b / 1000 * 512 / r for b, r in zip(bins, [w, h, w, h], strict=True)]
    assert bins_to_box(bins, w, h) == pytest.approx(official, rel=1e-6)
    assert bins_to_box(bins, w, h, divisor="mmpretrain") == pytest.approx(mmpretrain, rel=1e-6)
    assert bins_to_box([999, 0, 999, 999], 1.0, 0.5) == [512.0, 0.0, 512.0, 1024.0]
    assert bins_to_box([500, 0, 1000, 1000], 1.0, 1.0, divisor="mmpretrain") == [256, 0, 512, 512]
    with pytest.raises(ValueError, match="divisor"):
        bins_to_box(bins, w, h, divisor="half")  # type: ignore[arg-type]


def test_box_round_trip_within_one_bin() -> None:
    box, w, h = [37.2, 81.9, 402.4, 355.0], 512 / 640, 512 / 427
    back = bins_to_box(box_to_bins(box, w, h), w, h)
    for got, want, r in zip(back, box, [w, h, w, h], strict=True):
        assert abs(got - want) <= 0.5 * 512 / 999 / r + 1e-4


def test_bin_tokens_and_ids(tok: OFATokenizer) -> None:
    box, w, h = [100, 50, 300, 420], 512 / 640, 512 / 480
    text = tok.box_to_tokens(box, w, h)
    assert text == "<bin_156> <bin_104> <bin_468> <bin_874>"
    ids = tok.box_to_ids(box, w, h)
    assert ids == [58457 + b for b in (156, 104, 468, 874)]
    assert tok.encode(" region:" + text, add_special_tokens=False) == [976, 35, *ids]
    assert tok.ids_to_bins(torch.tensor([0, *ids, 2, 1])) == [156, 104, 468, 874]
    assert tok.bin_token(0) == "<bin_0>" and tok.bin_token(999) == "<bin_999>"
    with pytest.raises(ValueError, match="outside"):
        tok.bin_token(1000)
    with pytest.raises(ValueError, match="not a bin token"):
        tok.ids_to_bins([58457, 99])


# --- hub downloads, against a local stand-in for the Hugging Face hub ---------------------------


class FakeHub(http.server.ThreadingHTTPServer):
    """Serves ``/{repo_id}/resolve/{revision}/{filename}`` (HEAD and GET) as the hub does."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.repos = repos
        self.requests: list[tuple[str, str]] = []
        self.url = f"http://127.0.0.1:{self.server_port}"


class _HubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def do_HEAD(self) -> None:
        self._reply(with_body=False)

    def do_GET(self) -> None:
        self._reply(with_body=True)

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, with_body: bool) -> None:
        self.server.requests.append((self.command, self.path))
        org, name, verb, _revision, filename = (self.path.split("/", 5)[1:] + [""] * 5)[:5]
        files = self.server.repos.get(f"{org}/{name}") if verb == "resolve" else None
        data = None if files is None else files.get(filename)
        if data is not None:
            self.send_response(200)
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        else:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound" if files is None else "EntryNotFound")
        if files is not None:
            self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()
        if with_body and data:
            self.wfile.write(data)


@pytest.fixture
def hub_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A fake hub holding the OFA BPE files, with HF_ENDPOINT and a fresh cache pointed at it."""
    files = {f: (BPE_DIR / f).read_bytes() for f in ("vocab.json", "merges.txt")}
    server = FakeHub({REPO_ID: files})
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # No user-agent telemetry: it would look up huggingface.co itself.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"huggingface_hub backed off for {seconds}s: it should not retry here")


def test_hub_download_gives_fixture_ids(hub_env: FakeHub, tmp_path: Path, monkeypatch) -> None:
    hub_tok = OFATokenizer.from_pretrained(REPO_ID)
    for case in CASES["cases"]:
        assert hub_tok.encode(case["text"]) == case["ids"]
    base = f"/{REPO_ID}/resolve/main"
    assert ("GET", f"{base}/vocab.json") in hub_env.requests
    assert ("GET", f"{base}/merges.txt") in hub_env.requests
    assert ("HEAD", f"{base}/ofa_tokenizer.json") in hub_env.requests  # optional, absent
    assert ("HEAD", f"{base}/tokenizer.json") not in hub_env.requests  # not needed
    assert list((tmp_path / "hf_cache").glob("models--OFA-Sys--OFA-base/snapshots/*/vocab.json"))

    # Hub gone: the cached files are used at once (no backoff), nothing is downloaded twice.
    hub_env.shutdown()
    hub_env.server_close()
    monkeypatch.setattr(time, "sleep", _no_sleep)
    assert OFATokenizer.from_pretrained(REPO_ID).encode(" yes") == [0, 4420, 2]


def test_hub_tokenizer_json_fallback(hub_env: FakeHub, tok: OFATokenizer, tmp_path: Path) -> None:
    tok.save_pretrained(tmp_path / "saved")
    hub_env.repos["someone/small-ofa"] = {
        f: (tmp_path / "saved" / f).read_bytes() for f in ("tokenizer.json", "ofa_tokenizer.json")
    }
    hub_tok = OFATokenizer.from_pretrained("someone/small-ofa")
    assert (len(hub_tok), hub_tok.bin_offset) == (59457, 58457)
    assert hub_tok.encode(CASES["cases"][6]["text"]) == CASES["cases"][6]["ids"]


def test_hub_offline_and_nothing_cached(hub_env: FakeHub, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OFAHubError) as err:
        OFATokenizer.from_pretrained(REPO_ID)
    message = str(err.value)
    assert "'OFA-Sys/OFA-base'" in message and "offline" in message
    assert "pass a local directory holding vocab.json + merges.txt" in message
    assert "\n" not in message
    assert hub_env.requests == []


def test_hub_unreachable_and_nothing_cached(hub_env: FakeHub, monkeypatch) -> None:
    hub_env.shutdown()
    hub_env.server_close()
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)  # skip huggingface_hub's retry backoff
    with pytest.raises(OFAHubError, match=r"'OFA-Sys/OFA-base'.*unreachable.*local directory"):
        OFATokenizer.from_pretrained(REPO_ID)
    assert len(sleeps) <= 5  # one backoff round, then cache-only for the other files


def test_hub_repository_not_found(hub_env: FakeHub) -> None:
    with pytest.raises(OFAHubError, match=r"'nobody/nothing'.*repository not found"):
        OFATokenizer.from_pretrained("nobody/nothing")
