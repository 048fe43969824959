"""VQA accuracy as computed by the official VQA API (``vqaEval.py``), mmpretrain's ``VQAAcc`` and
OFA's soft-score variant.

The official accuracy of an answer is ``min(#humans that gave it / 3, 1)`` averaged over the ten
leave-one-out subsets of the ten human answers; overall and per answer type it is reported x100,
rounded to 2 decimals. Answers are normalised (punctuation, number words, articles, contractions)
only when the humans disagree, and otherwise compared verbatim, exactly as ``vqaEval.py`` does.
mmpretrain's ``VQAAcc`` (what its ``tools/test.py`` prints) always normalises and scores
``min(1, matching weight / 0.3)`` with no leave-one-out: it is higher (0.33 for one human in ten).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

# VQA API vqaEval.py: contractions (verbatim, oddities such as "somebody'd" -> "somebodyd" included)
# fmt: off
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
# VQA API vqaEval.py: manualMap, articles, punct
MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
    ",", "?", "!",
)
# fmt: on
# VQA API vqaEval.py: the regexes verbatim; "(?!<=\d)" is a (no-op) lookahead in the original too
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")


def process_punctuation(text: str) -> str:
    """``vqaEval.processPunctuation``: drop or space out punctuation, strip non-decimal periods."""
    out = text
    drop = COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if drop or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # vqaEval.py passes re.UNICODE positionally, i.e. as count: at most 32 periods are removed
    return PERIOD_STRIP.sub("", out, count=int(re.UNICODE))


def process_digit_article(text: str) -> str:
    """``vqaEval.processDigitArticle``: lower-case, number words to digits, drop articles,
    restore contractions."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """Official VQA answer normalisation: punctuation, then digits/articles/contractions."""
    return process_digit_article(process_punctuation(text))


def _clean(text: str) -> str:
    # VQA API vqaEval.py: newlines and tabs to spaces, then strip
    return text.replace("\n", " ").replace("\t", " ").strip()


def question_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official accuracy (a fraction in [0, 1]) of one answer against the human answers.

    For each human answer left out, ``min(#matches among the others / 3, 1)``; the mean over all.
    """
    if not gt_answers:
        raise ValueError("question_accuracy needs at least one ground-truth answer")
    gts = [_clean(a) for a in gt_answers]
    pred = _clean(prediction)
    # VQA API vqaEval.py: normalisation is applied only when the human answers differ
    if len(set(gts)) > 1:
        gts = [normalize_answer(a) for a in gts]
        pred = normalize_answer(pred)
    matches = [g == pred for g in gts]  # vqaEval.py: case-sensitive when not normalised
    n = sum(matches)
    return sum(min(1.0, (n - m) / 3) for m in matches) / len(matches)


def vqa_accuracy(
    predictions: Mapping[int, str],
    answers: Mapping[int, Sequence[str]],
    answer_types: Mapping[int, str] | None = None,
) -> dict[str, float]:
    """Official VQA accuracy over the predicted questions, x100 with 2 decimals.

    Args:
        predictions: question id -> predicted answer.
        answers: question id -> the (10) human answers.
        answer_types: question id -> ``"yes/no"``, ``"number"`` or ``"other"``; adds one entry per
            answer type to the result.

    Returns:
        ``{"overall": ..., "yes/no": ..., "number": ..., "other": ...}``. The official evaluation
        requires predictions for every question of the annotation file; here the mean is over the
        predicted ones.
    """
    if not predictions:
        raise ValueError("vqa_accuracy got no predictions")
    missing = [q for q in predictions if q not in answers]
    if missing:
        raise ValueError(f"no ground-truth answers for question id(s) {missing[:5]}")
    per_question = {q: question_accuracy(a, answers[q]) for q, a in predictions.items()}
    groups: dict[str, list[float]] = {"overall": list(per_question.values())}
    if answer_types is not None:
        for q, acc in per_question.items():
            groups.setdefault(answer_types[q], []).append(acc)
    # VQA API vqaEval.py setAccuracy: round(100 * mean, 2)
    return {k: round(100 * sum(v) / len(v), 2) for k, v in groups.items()}


def vqa_acc_mmpretrain(
    predictions: Mapping[int, str],
    answers: Mapping[int, Sequence[str]],
    full_score_weight: float = 0.3,
) -> float:
    """mmpretrain's ``VQAAcc`` (mmpretrain/evaluation/metrics/vqa.py), x100 and unrounded.

    Each distinct human answer weighs ``count / #answers`` (mmpretrain ``COCOVQA``); prediction
    and answers are always normalised; a question scores ``min(1, matching weight / 0.3)``.
    """
    if not predictions:
        raise ValueError("vqa_acc_mmpretrain got no predictions")
    missing = [q for q in predictions if q not in answers]
    if missing:
        raise ValueError(f"no ground-truth answers for question id(s) {missing[:5]}")
    acc = []
    for q, prediction in predictions.items():
        counts = Counter(answers[q])
        pred = normalize_answer(_clean(prediction))
        weight = 0.0
        for answer, count in counts.items():
            if normalize_answer(_clean(answer)) == pred:
                weight += count / len(answers[q])
        acc.append(min(1.0, weight / full_score_weight))
    return sum(acc) / len(acc) * 100  # mmpretrain's order of operations


def answer_soft_scores(gt_answers: Sequence[str]) -> dict[str, float]:
    """Soft target score of each distinct human answer: its leave-one-out accuracy.

    With 10 answers this is 0.3 / 0.6 / 0.9 / 1.0 for an answer given 1 / 2 / 3 / >=4 times: the
    usual soft VQA target, usable as the ``ref_dicts`` of :func:`vqa_score` (answers verbatim).
    """
    n = len(gt_answers)
    return {
        a: (k * min(1.0, (k - 1) / 3) + (n - k) * min(1.0, k / 3)) / n
        for a, k in Counter(gt_answers).items()
    }


def vqa_score(
    predictions: Mapping[int, str], ref_dicts: Mapping[int, Mapping[str, float]]
) -> float:
    """OFA's VQA score: the mean of ``ref_dict.get(answer, 0)``, a fraction (not x100).

    ``ref_dicts`` maps a question id to its answer -> soft score dict (see
    :func:`answer_soft_scores`); answers are compared verbatim (OFA:utils/eval_utils.py
    ``eval_vqa_gen``).
    """
    if not predictions:
        raise ValueError("vqa_score got no predictions")
    missing = [q for q in predictions if q not in ref_dicts]
    if missing:
        raise ValueError(f"no reference scores for question id(s) {missing[:5]}")
    return sum(ref_dicts[q].get(a, 0.0) for q, a in predictions.items()) / len(predictions)
