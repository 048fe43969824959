"""The language of the synthetic shapes world: captions, referring expressions, questions.

Every text is lower case and made from a handful of fixed templates over a small vocabulary, so a
small model can learn it exactly. An object is named by a *descriptor*: a subset of its attributes in
the fixed adjective order size, colour, shape ("small red circle", "red shape", "small one"). Spatial
words compare box centres and are only used when the centres differ by more than
``RELATION_MARGIN`` of the image side, so no text is ever ambiguous or borderline.

- captions always mention every object (colour and shape, the size in "detailed" variants), listed
  left to right, or as a spatial relation between two of them ("a small red circle above a blue
  square"); they have no punctuation.
- referring expressions ("the blue square", "the circle on the left") are emitted only when exactly
  one object fits them.
- questions end with "?"; counts are answered with digits ("2"), as the VQA normaliser expects.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from .scene import Scene, ShapeObject

T = TypeVar("T")

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple")  # consonant-initial: templates use "a"
SIZES = ("small", "large")
ADJECTIVES = ("size", "colour")  # their order in every phrase, before the shape noun
ATTRIBUTES = (*ADJECTIVES, "shape")
VALUES = {"size": SIZES, "colour": COLOURS, "shape": SHAPES}
MAX_OBJECTS = 3
EXPRESSIONS_PER_OBJECT = 3  # referring sentences per RefCOCO ref, at most
NUMBERS = ("one", "two", "three")  # caption words for 1..MAX_OBJECTS objects
RELATION_MARGIN = 0.1  # fraction of the image side two centres must differ by to be compared

# relation -> (axis of the box centre, sign): "a left of b" when sign * (a - b) > margin
RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}
# spatial suffix of a referring expression -> relation the object has to every other candidate
SPATIAL = {
    "on the left": "left of",
    "on the right": "right of",
    "at the top": "above",
    "at the bottom": "below",
}
CAPTION_FORMATS = {
    "list": "{objects}",
    "count": "{number} {noun} {objects}",
    "there": "there {verb} {objects}",
    "relation": "{objects}",  # "{a} {relation} {b}" then the rest of the objects
}
# (attribute asked, question prefix, noun of the expressions that avoid naming the shape)
ATTRIBUTE_QUESTIONS = (
    ("colour", "what color is", "shape"),
    ("shape", "what shape is", "one"),
    ("size", "what size is", "shape"),
)
QUESTION_FORMATS = {
    "attribute": "{} {}?",
    "count": "how many {}s are there?",
    "exists": "is there a {}?",
    "position": "is {} {} {}?",
}
YES_NO = ("yes", "no")
_FILLERS = ("a", "and", "the", "is", "are", "shape", "shapes", "one")  # words the code puts in

Descriptor = tuple[tuple[str, str], ...]  # ((attribute, value), ...) in ATTRIBUTES order
_SUBSETS = [s for r in range(1, len(ATTRIBUTES) + 1) for s in itertools.combinations(ATTRIBUTES, r)]
DESCRIPTORS: list[Descriptor] = [
    tuple(zip(attrs, values, strict=True))
    for attrs in _SUBSETS
    for values in itertools.product(*(VALUES[a] for a in attrs))
]


@dataclass(frozen=True)
class CaptionSpec:
    """How one caption is built: template, whether sizes are said, object order, relation."""

    template: str
    detail: bool
    order: tuple[int, ...]
    relation: str | None = None


@dataclass(frozen=True)
class Question:
    """A VQA question about one scene."""

    question: str
    answer: str
    question_type: str
    answer_type: str  # "yes/no" | "number" | "other"


@dataclass(frozen=True)
class SceneText:
    """Everything said about one scene."""

    captions: list[str]
    caption_specs: list[CaptionSpec]
    expressions: list[list[str]]  # per object: its referring expressions (maybe none)
    questions: list[Question]
    regions: list[str]  # per object: its region caption


def words(text: str) -> list[str]:
    """Split a generated text into vocabulary words ("?" is a word of its own)."""
    return text.replace("?", " ?").split()


def shapes_vocabulary() -> list[str]:
    """Every word a caption, expression, question or answer of the shapes world can contain."""
    vocab = {*_FILLERS, *NUMBERS, *answer_vocabulary(), *(s + "s" for s in SHAPES)}
    templates = (*CAPTION_FORMATS.values(), *QUESTION_FORMATS.values(), *RELATIONS, *SPATIAL)
    for text in (*templates, *(prefix for _, prefix, _ in ATTRIBUTE_QUESTIONS)):
        vocab |= {w for w in words(text) if "{" not in w}
    return sorted(vocab)


def answer_vocabulary() -> list[str]:
    """Every VQA answer, in a fixed order (the ``answer_list.json``)."""
    return [*YES_NO, *(str(n) for n in range(MAX_OBJECTS + 1)), *COLOURS, *SHAPES, *SIZES]


def relation_holds(a: ShapeObject, b: ShapeObject, relation: str, image_size: int) -> bool | None:
    """Whether ``a`` is ``relation`` ``b``; None when the centres are too close to tell."""
    axis, sign = RELATIONS[relation]
    d = sign * (a.centre[axis] - b.centre[axis])
    margin = RELATION_MARGIN * image_size
    return True if d > margin else False if d < -margin else None


def describe_scene(
    scene: Scene, rng: np.random.Generator, captions_per_image: int = 5
) -> SceneText:
    """Captions, referring expressions, questions and region captions of one scene."""
    specs = _pick_captions(scene, rng, captions_per_image)
    expressions = [
        _sample(referring_expressions(scene, i), rng, EXPRESSIONS_PER_OBJECT)
        for i in range(len(scene.objects))
    ]
    return SceneText(
        captions=[caption(scene, spec) for spec in specs],
        caption_specs=specs,
        expressions=expressions,
        questions=scene_questions(scene, rng),
        regions=[region_caption(obj) for obj in scene.objects],
    )


def region_caption(obj: ShapeObject) -> str:
    """The grounded caption of one object: "a small red circle"."""
    return "a " + _phrase(_descriptor(obj, ATTRIBUTES), "shape")


def caption(scene: Scene, spec: CaptionSpec) -> str:
    """Render one caption of ``scene``."""
    phrases = [
        "a " + _phrase(_descriptor(scene.objects[i], _caption_attrs(spec.detail)), "shape")
        for i in spec.order
    ]
    if spec.relation is not None:
        phrases[:2] = [f"{phrases[0]} {spec.relation} {phrases[1]}"]
    n = len(spec.order)
    return CAPTION_FORMATS[spec.template].format(
        objects=_join(phrases),
        number=NUMBERS[n - 1],
        noun="shape" if n == 1 else "shapes",
        verb="is" if n == 1 else "are",
    )


def referring_expressions(
    scene: Scene, index: int, avoid: str | None = None, noun: str = "shape", spatial: bool = True
) -> list[str]:
    """All expressions that pick out exactly object ``index`` and do not name attribute ``avoid``.

    "the small red circle" when no other object is a small red circle; "the circle on the left" when
    it is left of every other circle (by more than the margin). ``noun`` stands for the shape when
    the shape is not named ("the red shape", "the red one").
    """
    target = scene.objects[index]
    found = []
    for attrs in ((), *_SUBSETS):
        if avoid in attrs:
            continue
        desc = _descriptor(target, attrs)
        text = "the " + _phrase(desc, noun)
        group = [j for j, obj in enumerate(scene.objects) if _matches(obj, desc)]
        if len(group) == 1 and attrs:
            found.append(text)
        elif len(group) > 1 and spatial:
            found += [
                f"{text} {suffix}"
                for suffix, relation in SPATIAL.items()
                if all(
                    j == index
                    or relation_holds(target, scene.objects[j], relation, scene.image_size)
                    for j in group
                )
            ]
    return found


def absent_expressions(scene: Scene) -> list[str]:
    """Referring expressions that fit *no* object of ``scene`` ("the green triangle" in a scene
    without one), every descriptor that names a colour or a shape: the "not in the image" queries
    of the grounding rejection evaluation (the training data never has them)."""
    return [
        "the " + _phrase(desc, "shape")
        for desc in DESCRIPTORS
        if {a for a, _ in desc} & {"colour", "shape"}
        and not any(_matches(obj, desc) for obj in scene.objects)
    ]


def scene_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Attribute, count, existence and position questions, as many "yes" as "no" answers."""
    objects = scene.objects
    questions = []
    for attr, prefix, noun in ATTRIBUTE_QUESTIONS:
        options = [
            (i, text)
            for i in range(len(objects))
            for text in referring_expressions(scene, i, avoid=attr, noun=noun)
        ]
        if options:
            i, text = _choice(options, rng)
            answer = getattr(objects[i], attr)
            text = QUESTION_FORMATS["attribute"].format(prefix, text)
            questions.append(Question(text, answer, f"{prefix} the", "other"))

    present = [d for d in DESCRIPTORS if any(_matches(o, d) for o in objects)]
    absent = [d for d in DESCRIPTORS if d not in present]
    counted = _choice(present if rng.random() < 0.5 else DESCRIPTORS, rng)
    for desc in ((), counted):
        count = sum(_matches(o, desc) for o in objects)
        text = QUESTION_FORMATS["count"].format(_phrase(desc, "shape"))
        questions.append(Question(text, str(count), "how many", "number"))
    for pool, answer in ((present, "yes"), (absent, "no")):
        text = QUESTION_FORMATS["exists"].format(_phrase(_choice(pool, rng), "shape"))
        questions.append(Question(text, answer, "is there a", "yes/no"))

    named = [referring_expressions(scene, i, spatial=False) for i in range(len(objects))]
    pools: dict[bool, list[tuple[int, int, str]]] = {True: [], False: []}
    for i, j in itertools.permutations(range(len(objects)), 2):
        for relation in RELATIONS:
            holds = relation_holds(objects[i], objects[j], relation, scene.image_size)
            if holds is not None and named[i] and named[j]:
                pools[holds].append((i, j, relation))
    if pools[True] and pools[False]:
        for holds in (True, False):
            i, j, relation = _choice(pools[holds], rng)
            a, b = _choice(named[i], rng), _choice(named[j], rng)
            text = QUESTION_FORMATS["position"].format(a, relation, b)
            questions.append(Question(text, YES_NO[not holds], "is the", "yes/no"))
    return questions


def itm_negative(
    scene: Scene,
    spec: CaptionSpec,
    others: Sequence[tuple[Scene, list[str]]],
    rng: np.random.Generator,
) -> tuple[str, str]:
    """A caption that is false for ``scene`` and where it came from: "other_scene" or "mutated".

    Captions name every object, so a caption is false when the objects it names differ from the
    scene's: half the time a caption of another scene with other (colour, shape) pairs, otherwise
    ``spec`` re-rendered with one attribute it says (size only in detailed captions) changed.
    """
    if rng.random() < 0.5:
        for _ in range(10):
            other, captions = _choice(others, rng)
            if _inventory(other) != _inventory(scene):
                return _choice(captions, rng), "other_scene"
    i = int(rng.integers(len(scene.objects)))
    attr = _choice(_caption_attrs(spec.detail), rng)
    obj = scene.objects[i]
    value = _choice([v for v in VALUES[attr] if v != getattr(obj, attr)], rng)
    changed: dict[str, Any] = {attr: value}
    objects = (*scene.objects[:i], replace(obj, **changed), *scene.objects[i + 1 :])
    return caption(replace(scene, objects=objects), spec), "mutated"


def scene_texts(text: SceneText) -> Iterator[str]:
    """Every caption, expression, question and answer of one described scene."""
    yield from text.captions
    for expressions in text.expressions:
        yield from expressions
    for q in text.questions:
        yield q.question
        yield q.answer
    yield from text.regions


def _pick_captions(scene: Scene, rng: np.random.Generator, k: int) -> list[CaptionSpec]:
    """``k`` caption specs, cycling through the templates so each is used before any repeats."""
    order = tuple(sorted(range(len(scene.objects)), key=lambda i: scene.objects[i].centre))
    groups = [
        [CaptionSpec(template, detail, order) for detail in (False, True)]
        for template in ("list", "count", "there")
    ]
    relations = []
    for a, b in itertools.permutations(order, 2):
        relation = _dominant_relation(scene, a, b)
        if relation is not None:
            rest = tuple(i for i in order if i not in (a, b))
            relations += [
                CaptionSpec("relation", detail, (a, b, *rest), relation) for detail in (False, True)
            ]
    groups.append(relations)
    shuffled = [_sample(g, rng, len(g)) for g in groups if g]
    ranked = [
        spec
        for row in itertools.zip_longest(*_sample(shuffled, rng, len(shuffled)))
        for spec in row
        if spec is not None
    ]
    return [ranked[i % len(ranked)] for i in range(k)]


def _dominant_relation(scene: Scene, a: int, b: int) -> str | None:
    """The clear relation of object ``a`` to ``b`` along the axis where they differ most."""
    oa, ob = scene.objects[a], scene.objects[b]
    gaps = {
        r: abs(oa.centre[axis] - ob.centre[axis])
        for r, (axis, _) in RELATIONS.items()
        if relation_holds(oa, ob, r, scene.image_size)
    }
    return max(gaps, key=gaps.__getitem__, default=None)


def _caption_attrs(detail: bool) -> tuple[str, ...]:
    return ATTRIBUTES if detail else ("colour", "shape")


def _descriptor(obj: ShapeObject, attrs: Sequence[str]) -> Descriptor:
    return tuple((a, getattr(obj, a)) for a in attrs)


def _matches(obj: ShapeObject, desc: Descriptor) -> bool:
    return all(getattr(obj, a) == v for a, v in desc)


def _phrase(desc: Descriptor, noun: str) -> str:
    """Words of a descriptor in adjective order; ``noun`` when the shape is not part of it."""
    values = dict(desc)
    return " ".join([*(values[a] for a in ADJECTIVES if a in values), values.get("shape", noun)])


def _inventory(scene: Scene) -> list[tuple[str, str]]:
    return sorted((o.colour, o.shape) for o in scene.objects)


def _join(phrases: Sequence[str]) -> str:
    """Join phrases as "x", "x and y" or "x y and z": no commas, the grammar stays regular."""
    return phrases[0] if len(phrases) == 1 else " ".join(phrases[:-1]) + " and " + phrases[-1]


def _choice(items: Sequence[T], rng: np.random.Generator) -> T:
    return items[int(rng.integers(len(items)))]


def _sample(items: Sequence[T], rng: np.random.Generator, k: int) -> list[T]:
    """Up to ``k`` distinct items in random order."""
    return [items[i] for i in rng.permutation(len(items))[:k]]
