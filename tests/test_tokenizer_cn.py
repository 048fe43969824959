"""OFA-CN's tokenizer against transformers' BertTokenizer + fairseq's Dictionary (golden file)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from ofa_vl.tokenizer import CHINESE_VOCAB, OFATokenizer, join_cjk

GOLDEN = Path(__file__).resolve().parent / "goldens" / "cn_tokenizer.json"


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok():
    return OFATokenizer.chinese()


def test_vocabulary_layout_is_fairseq_plus_ofa_tokens(tok, golden):
    # <s> <pad> </s> <unk>, dict.txt (21,128), <mask>, 8192 codes, 1000 bins
    assert len(tok) == golden["vocab_size"] == 30325
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
    assert (tok.code_offset, tok.bin_offset) == (21133, 29325)
    assert tok.language == "zh" and OFATokenizer.english().language == "en"


def test_ids_equal_the_reference(tok, golden):
    for case in golden["cases"]:
        assert tok.encode(case["text"]) == case["ids"], case["text"]


def test_batch_ids_equal_the_reference(tok, golden):
    texts = [c["text"] for c in golden["cases"]]
    out = tok(texts, return_tensors="pt")
    for row, mask, case in zip(out["input_ids"], out["attention_mask"], golden["cases"]):
        assert row[: int(mask.sum())].tolist() == case["ids"], case["text"]


def test_decoded_strings_equal_fairseq(tok, golden):
    for case in golden["cases"]:
        assert tok.decode(case["ids"]) == case["decoded"], case["text"]
    for case in golden["decode_cases"]:
        assert tok.decode(torch.tensor(case["ids"])) == case["decoded"], case["ids"]


def test_join_cjk_removes_only_spaces_between_wide_characters(tok):
    ids = tok.encode("一只猫，坐在 sofa 上。iPhone很好")
    assert tok.decode(ids) == "一 只 猫 ， 坐 在 sofa 上 。 iphone 很 好"
    assert tok.decode(ids, join_cjk_spaces=True) == "一只猫，坐在 sofa 上。 iphone 很好"
    assert join_cjk("a b 中 文  c") == "a b 中文  c"  # a double space is not a piece gap


def test_padding_and_special_tokens_in_decode(tok):
    ids = [0, *tok.encode("你好", add_special_tokens=False), 3, 2, 1, 1]
    assert tok.decode(ids) == "你 好 <unk>"  # fairseq shows <unk>; <pad> only pads batches
    assert tok.decode(ids, skip_special_tokens=False) == "<s> 你 好 <unk> </s> <pad> <pad>"


def test_save_and_directory_loading_keep_ids_and_decoding(tok, golden, tmp_path):
    tok.save_pretrained(tmp_path / "saved")
    for f in ("vocab.txt", "dict.txt"):
        shutil.copy(CHINESE_VOCAB / f, tmp_path / f)
    for again in (
        OFATokenizer.from_pretrained(tmp_path / "saved"),
        OFATokenizer.from_pretrained(tmp_path),
    ):
        assert len(again) == len(tok) and again.language == "zh"
        for case in golden["cases"][:20]:
            assert again.encode(case["text"]) == case["ids"]
            assert again.decode(case["ids"]) == case["decoded"]


def test_packaged_dictionary_covers_every_producible_piece():
    # every vocab.txt piece BERT can emit (no whitespace inside) has a fairseq id, in order
    pieces = (CHINESE_VOCAB / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    words = [
        ln.rsplit(" ", 1)[0]
        for ln in (CHINESE_VOCAB / "dict.txt").read_text("utf-8").split("\n")[:-1]
    ]
    assert len(pieces) == len(words) == 21128
    differ = [(p, w) for p, w in zip(pieces, words) if p != w]
    assert all(any(c.isspace() for c in p) for p, _ in differ) and len(differ) == 2


def test_malformed_dictionary_is_one_clear_error(tmp_path):
    shutil.copy(CHINESE_VOCAB / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "dict.txt").write_text("猫 1\n狗\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dict.txt:2: expected '<word> <count>'"):
        OFATokenizer.from_pretrained(tmp_path)


def test_dictionary_over_other_pieces_is_refused(tmp_path):
    shutil.copy(CHINESE_VOCAB / "vocab.txt", tmp_path / "vocab.txt")
    words = (CHINESE_VOCAB / "dict.txt").read_text("utf-8").split("\n")
    (tmp_path / "dict.txt").write_text("\n".join(words[:-2] + ["qqzzxx 1", ""]), encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"not a fairseq dictionary .*\(1 pieces missing, 1 words extra"
    ):
        OFATokenizer.from_pretrained(tmp_path)
