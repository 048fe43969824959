"""OFA tokenizer: BART byte-level BPE (or OFA-CN's BERT word pieces) + ``<code_i>`` image-code
tokens + ``<bin_i>`` location tokens.

Built on the ``tokenizers`` library. For the English models, ids, special tokens and ``decode``
reproduce the transformers 4.28 ``BartTokenizer`` that mmpretrain's and the HF port's
``OFATokenizer`` extend with ``add_tokens(<code_0..8191>)`` then ``add_tokens(<bin_0..999>)``
(golden cases: ``fixtures/tokenizer/ofa_tokenizer_cases.json``). For the Chinese models (OFA-CN,
``--bpe bert``), ids reproduce transformers' ``BertTokenizer(vocab.txt, do_lower_case=True)``
pieces mapped through fairseq's ``Dictionary`` of ``dict.txt``, and ``decode`` fairseq's
``BertBPE.decode`` (golden: ``tests/goldens/cn_tokenizer.json``). Box <-> bin conversion follows
the official OFA code (``OFA:data/mm_data/refcoco_dataset.py``, ``OFA:utils/eval_utils.py
eval_refcoco``).
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

from ofa_vl.errors import OFAValueError
from ofa_vl.hub import OFAHubError, resolve_files

__all__ = [
    "CHINESE_VOCAB",
    "CHINESE_VOCAB_SIZE",
    "ENGLISH_BPE",
    "OFAHubError",
    "OFATokenizer",
    "bins_to_box",
    "box_to_bins",
    "join_cjk",
]

# OFA's English BPE (OFA:utils/BPE as BART-layout vocab.json + merges.txt), shipped like open_clip's
ENGLISH_BPE = Path(__file__).resolve().parent / "assets" / "ofa-bpe"
# OFA-CN's vocabulary (OFA:utils/BERT_CN_dict: BERT vocab.txt + fairseq dict.txt), shipped the same way
CHINESE_VOCAB = Path(__file__).resolve().parent / "assets" / "ofa-bpe-cn"
CHINESE_VOCAB_SIZE = 30325  # 4 + 21,128 + <mask> + 8192 codes + 1000 bins

NUM_CODES = 8192
NUM_BINS = 1000
MAX_IMAGE_SIZE = 512  # OFA:tasks/mm_tasks/refcoco.py max_image_size
SIDE_FILE = "ofa_tokenizer.json"  # {"num_codes": int, "num_bins": int} next to a tokenizer.json
# BART's specials; `<unk>` and `<mask>` are optional in a custom tokenizer.json.
BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
# transformers BertTokenizer's special tokens: never split, never lower-cased (plain words to fairseq)
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# The OFA/BART or OFA-CN files first (exact reference behaviour), else a full tokenizer.json.
FILE_CHOICES = (("vocab.json", "merges.txt"), ("vocab.txt", "dict.txt"), ("tokenizer.json",))

Ids = Sequence[int] | torch.Tensor


def _check_text(text: str) -> None:
    """Text the BPE can read: a ``str`` without lone surrogates (undecodable bytes of argv/files)."""
    if not isinstance(text, str):
        raise OFAValueError(f"expected text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise OFAValueError(
            f"the text {text[:40]!r} is not valid UTF-8 (character {err.start}); re-encode it"
        ) from None


def _bart_bpe(vocab: Path, merges: Path) -> Tokenizer:
    """BART's byte-level BPE, configured as transformers' ``BartTokenizerFast`` configures it."""
    try:
        tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    except Exception as err:  # tokenizers raises a bare Exception on malformed files
        raise OFAValueError(f"cannot read BPE files {vocab} / {merges}: {err}") from err
    missing = [t for t in (BOS, PAD, EOS, UNK, MASK) if tok.token_to_id(t) is None]
    if missing:
        raise OFAValueError(
            f"{vocab} lacks {', '.join(missing)}: expected a BART-layout vocab.json "
            "(specials 0-3, <mask> last), not GPT-2's encoder.json"
        )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # transformers BartTokenizer: <s> <pad> </s> <unk> never strip spaces; <mask> eats the space before it.
    tok.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in (BOS, PAD, EOS, UNK)]
        + [AddedToken(MASK, lstrip=True, normalized=False, special=True)]
    )
    return tok


def _fairseq_words(path: Path) -> list[str]:
    """The words of a fairseq ``dict.txt``, read as ``Dictionary.add_from_file`` reads them."""
    words = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f.readlines(), 1):  # fairseq: readlines, rstrip, rsplit(" ", 1)
            word, sep, count = line.rstrip().rpartition(" ")
            if not sep or not count.isdigit():
                raise OFAValueError(f"{path}:{n}: expected '<word> <count>', got {line.rstrip()!r}")
            words.append(word)
    if len(set(words)) != len(words):
        raise OFAValueError(f"{path}: duplicate words (fairseq refuses to load it)")
    return words


def _bert_wordpiece(vocab_txt: Path, dict_txt: Path) -> Tokenizer:
    """OFA-CN's ``--bpe bert``: BERT uncased word pieces whose ids are fairseq's dictionary ids.

    fairseq ``Dictionary``: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, then ``dict.txt`` in
    order; ``OFA:tasks/ofa_task.py`` appends ``<mask>``. The word-piece model runs over the
    dictionary's words, which must hold every piece of ``vocab.txt`` BERT can emit (those without
    whitespace inside); extra words may only be ones no word piece can be (``""``, ``"##"``).
    OFA-CN's files differ in just that way: two ``vocab.txt`` pieces hold U+2028, blank in
    ``dict.txt``.
    """
    words = _fairseq_words(dict_txt)
    pieces = set(vocab_txt.read_text(encoding="utf-8").split("\n")) - {""}
    known = set(words)
    missing = [p for p in pieces if p not in known and not any(c.isspace() for c in p)]
    extra = known - pieces - {"", "##"}
    if missing or extra:
        odd = (missing or sorted(extra))[:3]
        raise OFAValueError(
            f"{dict_txt} is not a fairseq dictionary over the pieces of {vocab_txt} "
            f"({len(missing)} pieces missing, {len(extra)} words extra, e.g. {odd})"
        )
    vocab = {BOS: 0, PAD: 1, EOS: 2, UNK: 3}
    vocab.update((w, 4 + i) for i, w in enumerate(words))
    vocab[MASK] = len(vocab)
    # transformers BertTokenizer(do_lower_case=True): clean text, split CJK characters and
    # punctuation, strip accents, lower-case; [UNK] for unknown words and words over 100 chars
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in BERT_SPECIALS if t in vocab]
    )
    return tok


_BERT_SPECIAL = re.compile("|".join(re.escape(t) for t in BERT_SPECIALS))


def _bert_dropped(char: str) -> bool:
    # transformers BasicTokenizer._clean_text: NUL, U+FFFD and control characters but \t \n \r
    cat = unicodedata.category(char)
    return char in "\x00\ufffd" or (cat.startswith("C") and char not in "\t\n\r")


_CJK_RANGES = (  # transformers BasicTokenizer._is_chinese_char (= tokenizers' BertNormalizer)
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)  # fmt: skip


def _bert_boundary(char: str) -> bool:
    # whitespace (str.split) or a CJK ideograph, which _tokenize_chinese_chars pads with spaces
    cp = ord(char)
    return char.isspace() or any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _guard_bert_specials(text: str) -> str:
    """Lower-case the ``[CLS]``-like tokens BertTokenizer would split, so only whole ones match.

    BertTokenizer keeps a special token only when it is a whole word after cleaning, CJK spacing
    and whitespace splitting (``never_split``); elsewhere it lower-cases and splits it like text.
    """
    if "[" not in text:
        return text

    def whole(m: re.Match[str]) -> str:
        before = next((c for c in reversed(text[: m.start()]) if not _bert_dropped(c)), " ")
        after = next((c for c in text[m.end() :] if not _bert_dropped(c)), " ")
        keep = _bert_boundary(before) and _bert_boundary(after)
        return m.group() if keep else m.group().lower()

    return _BERT_SPECIAL.sub(whole, text)


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def join_cjk(text: str) -> str:
    """Drop the spaces word pieces leave between CJK characters: ``"图 片 ， 猫"`` -> ``"图片，猫"``.

    A space goes when the characters on both sides are East Asian wide or full-width (ideographs,
    kana, hangul, full-width forms and punctuation, emoji); spaces next to Latin text stay.
    """
    out: list[str] = []
    for i, char in enumerate(text):
        if (
            char == " "
            and out
            and i + 1 < len(text)
            and _is_wide(out[-1][-1])
            and _is_wide(text[i + 1])
        ):
            continue
        out.append(char)
    return "".join(out)


def _token_block(tok: Tokenizer, prefix: str, count: int) -> int:
    """Append ``<prefix_0..count-1>`` (unless already there) and return the id of the first one."""
    first = tok.token_to_id(f"<{prefix}_0>") if count else None
    if first is None:
        first = tok.get_vocab_size(with_added_tokens=True)
        # transformers 4.28 slow tokenizers strip the spaces around tokens added with `add_tokens`.
        tok.add_tokens(
            [
                AddedToken(f"<{prefix}_{i}>", lstrip=True, rstrip=True, normalized=False)
                for i in range(count)
            ]
        )
    for i in range(count):
        if tok.token_to_id(f"<{prefix}_{i}>") != first + i:
            raise OFAValueError(f"<{prefix}_*> tokens are not consecutive ids from {first}")
    return first


def _clean_up_tokenization(text: str) -> str:
    # transformers PreTrainedTokenizerBase.clean_up_tokenization (BART default: on)
    for old, new in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(old, new)
    return text


def _as_list(ids: Ids) -> list[int]:
    return [int(i) for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)]


class OFATokenizer:
    """BART BPE (or any ``tokenizers`` model) + ``num_codes`` code tokens + ``num_bins`` bin tokens.

    For the English OFA files: ``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3 ``<mask>``=50264,
    ``<code_0>``=50265, ``<bin_0>``=58457, vocabulary 59457.
    """

    def __init__(
        self, tokenizer: Tokenizer, *, num_codes: int = NUM_CODES, num_bins: int = NUM_BINS
    ) -> None:
        """Wrap ``tokenizer``, appending the code then bin tokens to it unless it has them."""
        bos, pad, eos, unk, mask = (tokenizer.token_to_id(t) for t in (BOS, PAD, EOS, UNK, MASK))
        if bos is None or pad is None or eos is None:
            raise OFAValueError(f"tokenizer lacks one of the special tokens {BOS} {PAD} {EOS}")
        self._bos, self._pad, self._eos = bos, pad, eos
        self._special_ids = frozenset(i for i in (bos, pad, eos, unk, mask) if i is not None)
        self._code_offset = _token_block(tokenizer, "code", num_codes)
        self._bin_offset = _token_block(tokenizer, "bin", num_bins)
        if num_codes and self._bin_offset != self._code_offset + num_codes:
            raise OFAValueError("<bin_*> tokens must directly follow the <code_*> tokens")
        self._num_codes, self._num_bins = num_codes, num_bins
        if tokenizer.post_processor is None:
            tokenizer.post_processor = processors.TemplateProcessing(
                single=f"{BOS} $A {EOS}", special_tokens=[(BOS, self._bos), (EOS, self._eos)]
            )
        self._tok = tokenizer
        # OFA-CN: BERT word pieces, decoded as fairseq's BertBPE (spaces between pieces)
        self._word_pieces = isinstance(tokenizer.model, models.WordPiece)
        self._guard = _guard_bert_specials if self._word_pieces else str

    @classmethod
    def english(cls) -> OFATokenizer:
        """The English OFA vocabulary shipped with the package (59457 ids, every English model)."""
        return cls.from_pretrained(ENGLISH_BPE)

    @classmethod
    def chinese(cls) -> OFATokenizer:
        """OFA-CN's vocabulary shipped with the package (30325 ids, every Chinese model)."""
        return cls.from_pretrained(CHINESE_VOCAB)

    @property
    def language(self) -> str:
        """``"zh"`` for OFA-CN's word pieces, else ``"en"``: the official code picks prompts by it."""
        return "zh" if self._word_pieces else "en"

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        num_codes: int | None = None,
        num_bins: int | None = None,
        revision: str | None = None,
    ) -> OFATokenizer:
        """Load from a directory or hub id holding ``vocab.json`` + ``merges.txt`` (English BPE),
        ``vocab.txt`` + ``dict.txt`` (OFA-CN) or ``tokenizer.json``.

        ``num_codes`` / ``num_bins`` default to the values in an ``ofa_tokenizer.json`` beside the
        files, else 8192 / 1000. Hub files are cached by ``huggingface_hub``; failures raise
        :class:`OFAHubError`.
        """
        files = resolve_files(name_or_path, FILE_CHOICES, optional=(SIDE_FILE,), revision=revision)
        side = json.loads(files[SIDE_FILE].read_text()) if SIDE_FILE in files else {}
        if "vocab.json" in files:
            base = _bart_bpe(files["vocab.json"], files["merges.txt"])
        elif "dict.txt" in files:
            base = _bert_wordpiece(files["vocab.txt"], files["dict.txt"])
        else:
            try:
                base = Tokenizer.from_file(str(files["tokenizer.json"]))
            except Exception as err:  # tokenizers raises a bare Exception on malformed files
                raise OFAValueError(f"cannot read {files['tokenizer.json']}: {err}") from err
        return cls(
            base,
            num_codes=side.get("num_codes", NUM_CODES) if num_codes is None else num_codes,
            num_bins=side.get("num_bins", NUM_BINS) if num_bins is None else num_bins,
        )

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``tokenizer.json`` + ``ofa_tokenizer.json``; ``from_pretrained`` reloads identical ids."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(out / "tokenizer.json"))
        side = {"num_codes": self._num_codes, "num_bins": self._num_bins}
        (out / SIDE_FILE).write_text(json.dumps(side, indent=2) + "\n")

    def __repr__(self) -> str:
        return (
            f"OFATokenizer(vocab_size={self.vocab_size}, code_offset={self._code_offset}, "
            f"bin_offset={self._bin_offset})"
        )

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token_id(self) -> int:
        return self._bos

    @property
    def pad_token_id(self) -> int:
        return self._pad

    @property
    def eos_token_id(self) -> int:
        return self._eos

    @property
    def code_offset(self) -> int:
        return self._code_offset

    @property
    def bin_offset(self) -> int:
        return self._bin_offset

    @property
    def num_codes(self) -> int:
        return self._num_codes

    @property
    def num_bins(self) -> int:
        return self._num_bins

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; with ``add_special_tokens`` wrapped as ``<s> ... </s>``."""
        _check_text(text)
        return list(self._tok.encode(self._guard(text), add_special_tokens=add_special_tokens).ids)

    def __call__(
        self,
        texts: str | Sequence[str],
        padding: bool = True,
        add_special_tokens: bool = True,
        max_length: int | None = None,
        truncation: bool = False,
        return_tensors: Literal["pt"] | None = "pt",
    ) -> dict[str, Any]:
        """Encode a text or a batch into ``input_ids`` and ``attention_mask``.

        Rows are right-padded with ``<pad>`` to the longest one when ``padding``. A row longer than
        ``max_length`` is cut (keeping ``</s>``) when ``truncation``, else raises ``ValueError``.
        A single string gives flat lists, or ``(1, L)`` tensors with ``return_tensors="pt"``.
        """
        batch = [texts] if isinstance(texts, str) else list(texts)
        for text in batch:
            _check_text(text)
        n_special = self._tok.num_special_tokens_to_add(False) if add_special_tokens else 0
        if max_length is not None and max_length < n_special:
            raise OFAValueError(
                f"max_length={max_length} leaves no room for {n_special} special tokens"
            )
        rows = []
        texts_in = [self._guard(t) for t in batch]
        for i, enc in enumerate(self._tok.encode_batch(texts_in, add_special_tokens=False)):
            length = len(enc.ids) + n_special
            if max_length is not None and length > max_length:
                if not truncation:
                    raise OFAValueError(
                        f"text {i} is {length} tokens long, more than max_length={max_length} "
                        "(pass truncation=True to cut it)"
                    )
                enc.truncate(max_length - n_special)
            rows.append(
                list(self._tok.post_process(enc, add_special_tokens=add_special_tokens).ids)
            )
        width = max((len(r) for r in rows), default=0)
        masks = [[1] * len(r) + [0] * (width - len(r) if padding else 0) for r in rows]
        if padding:
            rows = [r + [self._pad] * (width - len(r)) for r in rows]
        if return_tensors == "pt":
            if len({len(r) for r in rows}) > 1:
                raise OFAValueError("rows differ in length: pass padding=True to return tensors")
            ids_t = torch.tensor(rows, dtype=torch.long).reshape(len(rows), width)
            mask_t = torch.tensor(masks, dtype=torch.long).reshape(len(rows), width)
            return {"input_ids": ids_t, "attention_mask": mask_t}
        if isinstance(texts, str):
            return {"input_ids": rows[0], "attention_mask": masks[0]}
        return {"input_ids": rows, "attention_mask": masks}

    def decode(
        self,
        ids: Ids,
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool = True,
        join_cjk_spaces: bool = False,
    ) -> str:
        """Text of ``ids`` exactly as the reference tokenizer decodes it.

        English: transformers 4.28's slow ``BartTokenizer`` + OFA tokens; ``skip_special_tokens``
        drops ``<s> <pad> </s> <unk> <mask>`` but keeps code and bin tokens, which are joined to the
        text around them with single spaces (transformers' ``spaces_between_special_tokens``).
        Chinese: fairseq's ``Dictionary.string`` + ``BertBPE.decode``, which leaves a space between
        CJK characters; ``skip_special_tokens`` drops ``<s> <pad> </s>`` (fairseq shows ``<unk>``).
        ``join_cjk_spaces`` removes the spaces between CJK characters (:func:`join_cjk`).
        """
        ids = _as_list(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise OFAValueError(
                f"token ids {bad[:5]} are outside the vocabulary (size {self.vocab_size})"
            )
        if self._word_pieces:
            text = self._decode_pieces(ids, skip_special_tokens, clean_up_tokenization_spaces)
        else:
            text = self._decode_bpe(ids, skip_special_tokens, clean_up_tokenization_spaces)
        return join_cjk(text) if join_cjk_spaces else text

    def _decode_pieces(self, ids: list[int], skip_special: bool, clean_up: bool) -> str:
        if skip_special:  # fairseq: the generator strips <s> </s>; <pad> only pads batches
            ids = [i for i in ids if i not in (self._bos, self._pad, self._eos)]
        # Dictionary.string joins symbols with " "; BertBPE.decode = clean_up_tokenization(
        # convert_tokens_to_string(x.split(" "))) = " ".join(...).replace(" ##", "").strip()
        text = " ".join(self._tok.id_to_token(i) or "" for i in ids).replace(" ##", "").strip()
        return _clean_up_tokenization(text) if clean_up else text

    def _decode_bpe(self, ids: list[int], skip_special_tokens: bool, clean_up: bool) -> str:
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        end_added = self._bin_offset + self._num_bins
        pieces: list[str] = []
        run: list[int] = []
        for i in ids:
            if self._code_offset <= i < end_added:
                if run:
                    pieces.append(self._tok.decode(run, skip_special_tokens=False))
                    run = []
                pieces.append(self._tok.id_to_token(i) or "")  # in range: never None
            else:
                run.append(i)
        if run:
            pieces.append(self._tok.decode(run, skip_special_tokens=False))
        text = " ".join(pieces)
        return _clean_up_tokenization(text) if clean_up else text

    def batch_decode(
        self,
        sequences: Iterable[Ids] | torch.Tensor,
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: bool = True,
        join_cjk_spaces: bool = False,
    ) -> list[str]:
        """:meth:`decode` for each row."""
        return [
            self.decode(s, skip_special_tokens, clean_up_tokenization_spaces, join_cjk_spaces)
            for s in sequences
        ]

    def bin_token(self, index: int) -> str:
        """``"<bin_{index}>"``."""
        if not 0 <= index < self._num_bins:
            raise OFAValueError(f"bin {index} is outside [0, {self._num_bins - 1}]")
        return f"<bin_{index}>"

    def box_to_tokens(
        self,
        box_xyxy: Sequence[float],
        w_ratio: float,
        h_ratio: float,
        max_image_size: int = MAX_IMAGE_SIZE,
    ) -> str:
        """``"<bin_x0> <bin_y0> <bin_x1> <bin_y1>"`` for a box in original-image pixels (see :func:`box_to_bins`)."""
        bins = box_to_bins(box_xyxy, w_ratio, h_ratio, self._num_bins, max_image_size)
        # OFA:data/mm_data/refcoco_dataset.py region_coord: space-separated bin tokens
        return " ".join(self.bin_token(b) for b in bins)

    def box_to_ids(
        self,
        box_xyxy: Sequence[float],
        w_ratio: float,
        h_ratio: float,
        max_image_size: int = MAX_IMAGE_SIZE,
    ) -> list[int]:
        """The four bin token ids of a box in original-image pixels (see :func:`box_to_bins`)."""
        bins = box_to_bins(box_xyxy, w_ratio, h_ratio, self._num_bins, max_image_size)
        return [self._bin_offset + b for b in bins]

    def ids_to_bins(self, ids: Ids) -> list[int]:
        """Bin indices (``token - bin_offset``) of generated ids; ``<s>``, ``<pad>``, ``</s>`` are skipped.

        Raises ``ValueError`` on any other non-bin token.
        """
        bins = []
        for i in _as_list(ids):
            if i in (self._bos, self._pad, self._eos):
                continue
            if not self._bin_offset <= i < self._bin_offset + self._num_bins:
                raise OFAValueError(f"token {i} is not a bin token ({self._bin_offset}..)")
            bins.append(i - self._bin_offset)  # OFA:utils/eval_utils.py eval_refcoco
        return bins


def box_to_bins(
    box_xyxy: Sequence[float],
    w_ratio: float,
    h_ratio: float,
    num_bins: int = NUM_BINS,
    max_image_size: int = MAX_IMAGE_SIZE,
) -> list[int]:
    """Quantize a box ``[x0, y0, x1, y1]`` in original-image pixels to bin indices.

    ``w_ratio`` / ``h_ratio`` are the resize ratios new/original. Each coordinate is scaled to the
    resized image, divided by ``max_image_size`` (not the image size) and
    ``round(c * (num_bins - 1))`` (half to even), clamped to ``[0, num_bins - 1]``.
    """
    # OFA:utils/transforms.py resize + Normalize, data/mm_data/refcoco_dataset.py (float32 torch ops)
    box = torch.tensor([float(c) for c in box_xyxy], dtype=torch.float32)
    if box.shape != (4,):
        raise OFAValueError(f"expected a box [x0, y0, x1, y1], got {list(box_xyxy)}")
    box = box * torch.tensor([w_ratio, h_ratio, w_ratio, h_ratio], dtype=torch.float32)
    box = box / max_image_size
    quant = (box * (num_bins - 1)).round().clamp(0, num_bins - 1)
    return [int(q) for q in quant.tolist()]


def bins_to_box(
    bins: Ids,
    w_ratio: float,
    h_ratio: float,
    num_bins: int = NUM_BINS,
    max_image_size: int = MAX_IMAGE_SIZE,
    divisor: Literal["official", "mmpretrain"] = "official",
) -> list[float]:
    """Box ``[x0, y0, x1, y1]`` in original-image pixels from four bin indices.

    ``coord = bin / (num_bins - 1) * max_image_size`` (``divisor="official"``, the default) or
    ``bin / num_bins * max_image_size`` (``"mmpretrain"``, to compare exactly with mmpretrain),
    then x /= ``w_ratio``, y /= ``h_ratio`` (the resize ratios new/original).
    """
    if len(bins) != 4:
        raise OFAValueError(f"expected 4 bins, got {list(bins)}")
    if divisor not in ("official", "mmpretrain"):
        raise OFAValueError(f"divisor must be 'official' or 'mmpretrain', got {divisor!r}")
    # official (the default): OFA:utils/eval_utils.py eval_refcoco; mmpretrain: OFA.post_process.
    # Both compute in float32 torch ops in this order.
    steps = num_bins - 1 if divisor == "official" else num_bins
    box = torch.tensor([int(b) for b in bins]) / steps * max_image_size
    box = box / torch.tensor([w_ratio, h_ratio, w_ratio, h_ratio], dtype=torch.float32)
    return [float(c) for c in box.tolist()]
