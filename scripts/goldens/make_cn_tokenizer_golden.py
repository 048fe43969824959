"""Golden data for OFA-CN's tokenizer: ``tests/goldens/cn_tokenizer.json``.

Run in a separate environment with the reference (no torch needed)::

    python -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install transformers==4.33.3
    /tmp/tfenv/bin/python scripts/goldens/make_cn_tokenizer_golden.py

The reference is what the official OFA code runs for ``--bpe bert`` (``OFA:tasks/ofa_task.py``,
``OFA:data/ofa_dataset.py encode_text``, ``OFA:fairseq/fairseq/data/encoders/hf_bert_bpe.py``):
transformers' ``BertTokenizer(vocab.txt, do_lower_case=True)`` pieces, looked up in fairseq's
``Dictionary`` loaded from ``dict.txt`` (+ ``<mask>``, 8192 codes, 1000 bins). The few lines of
fairseq's ``Dictionary`` used are restated below (``OFA:fairseq/fairseq/data/dictionary.py``), so
the script needs neither fairseq nor torch. The vocabulary files are the package's.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import transformers
from transformers import BertTokenizer

REPO = Path(__file__).resolve().parents[2]
VOCAB = REPO / "src" / "ofa_vl" / "assets" / "ofa-bpe-cn"
OUT = REPO / "tests" / "goldens" / "cn_tokenizer.json"
SPACE_NORMALIZER = re.compile(r"\s+")  # fairseq/fairseq/tokenizer.py


class Dictionary:
    """fairseq ``Dictionary``: ``__init__`` specials, ``add_from_file``, ``encode_line``, ``string``."""

    def __init__(self, dict_txt: Path) -> None:
        self.symbols = ["<s>", "<pad>", "</s>", "<unk>"]
        with open(dict_txt, encoding="utf-8") as f:
            for line in f.readlines():
                word, field = line.rstrip().rsplit(" ", 1)
                int(field)
                assert word not in self.symbols, word
                self.symbols.append(word)
        # OFA:tasks/ofa_task.py setup_task
        self.symbols += ["<mask>"] + [f"<code_{i}>" for i in range(8192)]
        self.symbols += [f"<bin_{i}>" for i in range(1000)]
        self.indices = {s: i for i, s in enumerate(self.symbols)}

    def encode_line(self, line: str) -> list[int]:
        words = SPACE_NORMALIZER.sub(" ", line).strip().split()
        return [self.indices.get(w, 3) for w in words]  # add_if_not_exist=False: <unk>

    def string(self, ids: list[int]) -> str:
        # bos and eos ignored (include_eos=False, bos_index set); unk -> "<unk>"
        return " ".join("<unk>" if i == 3 else self.symbols[i] for i in ids if i not in (0, 2))


def main() -> None:
    bert = BertTokenizer(str(VOCAB / "vocab.txt"), do_lower_case=True)
    fs = Dictionary(VOCAB / "dict.txt")

    def encode(text: str) -> list[int]:
        # OFA encode_text(prompt) between bos_item and eos_item
        return [0] + fs.encode_line(" ".join(bert.tokenize(text))) + [2]

    def decode(ids: list[int]) -> str:
        x = fs.string(ids)  # BertBPE.decode
        return bert.clean_up_tokenization(bert.convert_tokens_to_string(x.split(" ")))

    texts = [
        # OFA-CN's prompts (OFA:data/mm_data/*_dataset.py)
        "图片描述了什么内容?",
        '这段文字" 一只坐在沙发上的猫 "描述的是哪个区域？',
        "图片上的文字是什么?",
        # Chinese, traditional Chinese, Japanese, Korean
        "一个穿着红色衣服的女孩在公园里放风筝。",
        "這是一張在台北拍攝的照片，天氣很好。",
        "猫が窓のそばで寝ている。カタカナとひらがな",
        "한국어 문장입니다. 안녕하세요",
        # mixed Chinese / English / digits
        "我爱NLP和深度学习,OFA-CN模型很强大!",
        "iPhone 15 Pro售价7999元，比iPhone14贵了1000块",
        "请访问https://github.com/OFA-Sys/OFA获取代码 email: ofa@example.com",
        "Deep Learning深度学习2024年3月15日 10:30AM",
        # full-width letters, digits and punctuation
        "ＡＢＣ　ｄｅｆ　１２３４５",
        "，。！？：；“”‘’（）【】《》〈〉「」『』、…—～·",
        "价格：￥１２０．５０（含税）",
        # punctuation, symbols, maths
        "Hello, world! It's a test... (really?) [yes] {no} <maybe>",
        "a+b=c, x^2 ≥ 0, ∑∫√∞ ±×÷ ≠≈ α β γ",
        "#hashtag @user $100 %50 &amp; *star* ~tilde~ `code` |pipe| \\back/slash_",
        "##ab ## a## 中##文",
        # emoji (single, skin tone, ZWJ family, flags, keycap)
        "今天天气真好😀👍🏽🎉",
        "家庭👨‍👩‍👧‍👦 旗帜🇨🇳🇺🇸 数字1️⃣ 心❤️",
        "😎😎😎 ##😎",
        # accents and case
        "Café naïve résumé Ångström Über",
        "İstanbul ıi ǅungla ß ẞ Straße",
        "ÀÉÎÕÜ àéîõü ÇçÑñ",
        "e\u0301 vs é, a\u0308 vs ä, combining\u0332line",
        "Άλφα Βήτα ΓΆΜΜΑ Ελληνικά",
        "ПРИВЕТ мир Ёлка",
        "ﬁle ﬂower ligatures ㎏ ㎡ ①②③ Ⅻ",
        # control and format characters
        "a\x00b\x07c\x1bd\x7fe",
        "zero\u200bwidth\u200cjoin\u200dx\ufeffbom\ufffdrepl",
        "soft\u00adhyphen\u2060word\u2061joiner",
        # whitespace of many kinds
        "tab\there\nnewline\r\ncrlf\rcr",
        "nbsp\u00a0ideo\u3000em\u2003thin\u2009hair\u200a end",
        "line\u2028sep para\u2029sep vt\x0bff\x0cnel\x85x",
        "fs\x1cgs\x1drs\x1eus\x1fend",
        "   leading and trailing   ",
        "中\t文\n空\u3000白",
        "",
        "   ",
        # very long words (BertTokenizer: over 100 characters -> [UNK])
        "a" * 100,
        "a" * 101,
        "supercalifragilisticexpialidocious" * 3 + " ok",
        "1234567890" * 12,
        "中" * 150,
        "x" * 99 + "é",
        "internationalization antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
        # BERT's special tokens, kept whole; other bracketed strings split
        "[CLS] 你好 [SEP] world [MASK] [PAD] [UNK]",
        "[cls] [Sep] [mask]x[MASK]y",
        "<s> </s> <pad> <unk> <mask>",
        "x[MASK]y ，[MASK] [MASK][MASK] 中[MASK]文 _[CLS] 1[SEP]2 é[PAD]",
        "\u3000[UNK]\u3000 \x00[SEP]\x00 (\u200b[CLS]) a [MASK], b",
        # rare scripts and characters
        "مرحبا بالعالم שלום עולם",
        "हिन्दी ภาษาไทย ພາສາລາວ",
        "𠀀𠀁 𪚥 〇 々 〆 ㄅㄆㄇ",
        "Ⓐⓑ ⒜ 🄰 𝐀𝐁𝐂 𝕏",
    ]
    cases = [{"text": t, "ids": encode(t), "decoded": decode(encode(t))} for t in texts]

    # id sequences a model may generate: bins, codes, <unk>, pads, "##" first, blank dict word
    unk_word = fs.indices[""]
    decode_ids = [
        encode("一只猫")[:-1] + [fs.indices["<bin_12>"], fs.indices["<bin_999>"], 2],
        [0, fs.indices["<code_0>"], fs.indices["<code_8191>"], 2],
        [0, fs.indices["##猫"], fs.indices["猫"], fs.indices["##s"], 3, 2],
        [0, fs.indices["hello"], fs.indices[","], fs.indices["world"], fs.indices["!"], 2],
        [0, fs.indices["don"], fs.indices["'"], fs.indices["t"], unk_word, fs.indices["."], 2],
        [0, fs.indices["<mask>"], fs.indices["[CLS]"], fs.indices["n"], fs.indices["'"], 2],
        [fs.indices["图"], fs.indices["片"], fs.indices["?"], fs.indices["，"], fs.indices["x"]],
    ]
    decodes = [{"ids": ids, "decoded": decode(ids)} for ids in decode_ids]

    vocab_sha = {
        f: hashlib.sha256((VOCAB / f).read_bytes()).hexdigest() for f in ("vocab.txt", "dict.txt")
    }
    golden = {
        "made_by": "scripts/goldens/make_cn_tokenizer_golden.py",
        "reference": f"transformers {transformers.__version__} BertTokenizer(do_lower_case=True) "
        "+ fairseq Dictionary(dict.txt) + <mask>, 8192 codes, 1000 bins",
        "python": sys.version.split()[0],
        "vocab_sha256": vocab_sha,
        "vocab_size": len(fs.symbols),
        "cases": cases,
        "decode_cases": decodes,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(cases)} encode cases, {len(decodes)} decode cases")


if __name__ == "__main__":
    main()
