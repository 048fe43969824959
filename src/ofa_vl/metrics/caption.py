"""COCO caption metrics, computed exactly as ``pycocoevalcap.eval.COCOEvalCap`` does.

OFA reports its COCO numbers with ``OFA:run_scripts/caption/coco_eval.py``: pycocotools +
``COCOEvalCap`` (pycocoevalcap 1.2) on the images that have a prediction. Here the same steps run on
plain dicts: Stanford PTBTokenizer on references and predictions, then Bleu(4), Meteor, Rouge, Cider
(and optionally Spice). The tokenizer, METEOR and SPICE are Java programs.

Values are fractions as pycocoevalcap returns them (CIDEr 1.382 is the published 138.2);
:func:`as_percentages` converts them to the published scale.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence

from ofa_vl.data.coco_caption import load_caption_references
from ofa_vl.errors import OFARuntimeError

__all__ = ["MetricError", "as_percentages", "caption_metrics", "load_caption_references"]


class MetricError(OFARuntimeError):
    """A metric cannot run in this environment (Java or pycocoevalcap missing)."""


def _check_backend() -> None:
    if shutil.which("java") is None:
        raise MetricError(
            "caption metrics need Java on PATH (pycocoevalcap runs the Stanford PTB tokenizer and "
            "METEOR with `java`); install it, e.g. `apt-get install default-jre-headless`"
        )
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise MetricError(
            "caption metrics need pycocoevalcap: pip install 'ofa-vl[eval]'"
        ) from None


def caption_metrics(
    predictions: Mapping[int, str], references: Mapping[int, Sequence[str]], spice: bool = False
) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (and SPICE) of one caption per image, as fractions.

    Args:
        predictions: image id -> generated caption; the metrics cover exactly these images.
        references: image id -> reference captions (e.g. from :func:`load_caption_references`).
        spice: also compute SPICE (downloads Stanford CoreNLP on first use, needs ~8 GB heap).

    Returns:
        ``{"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"[, "SPICE"]}``, the
        keys of ``COCOEvalCap.eval``.
    """
    if not predictions:
        raise ValueError("caption_metrics got no predictions")
    missing = [i for i in predictions if not references.get(i)]
    if missing:
        raise ValueError(f"no reference captions for image id(s) {missing[:5]}")
    _check_backend()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.spice.spice import Spice
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # COCOEvalCap.evaluate: tokenize references and results separately, then run each scorer
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in references[i]] for i in predictions})
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in predictions.items()})

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"Bleu_{n}": float(b) for n, b in enumerate(bleu, start=1)}
    scorers = [("METEOR", Meteor), ("ROUGE_L", Rouge), ("CIDEr", Cider)]
    if spice:
        scorers.append(("SPICE", Spice))
    for name, scorer in scorers:
        score, _ = scorer().compute_score(gts, res)
        scores[name] = float(score)
    return scores


def as_percentages(scores: Mapping[str, float], ndigits: int = 1) -> dict[str, float]:
    """Scale pycocoevalcap fractions to the published percentages (CIDEr 1.382 -> 138.2)."""
    return {k: round(100 * v, ndigits) for k, v in scores.items()}
