"""The shapes world's commands: ``ofa data`` (datasets) and ``ofa demo``."""

from __future__ import annotations

import argparse

from .common import command


def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", required=True)
    s = sub.add_parser("shapes", help="the synthetic shapes world")
    s.add_argument("--out", required=True)
    s.add_argument("--train", type=int, default=2000)
    s.add_argument("--val", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=256)
    s.add_argument("--workers", type=int, default=1, help="processes rendering the images")
    f = sub.add_parser("shapes-folder", help="shapes scenes as a folder dataset (ofa train --data)")
    f.add_argument("--out", required=True)
    f.add_argument("--task", choices=["caption", "refcoco", "vqa"], default="caption")
    f.add_argument("--train", type=int, default=200)
    f.add_argument("--val", type=int, default=20)
    f.add_argument("--test", type=int, default=20)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--size", type=int, default=256)


@command("data", _data_args)
def cmd_data(args: argparse.Namespace) -> int:
    """Generate datasets (the synthetic shapes world)."""
    from ..shapes.world import shapes_command, write_shapes_folder

    if args.dataset == "shapes-folder":
        counts = (args.train, args.val, args.test)
        lines = write_shapes_folder(args.out, args.task, counts, args.seed, args.size)
        print(f"wrote {args.task} lines to {args.out}: {lines}")
        return 0
    shapes_command(args.out, args.train, args.val, args.seed, args.size, args.workers)
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    from ..zoo import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help=f"default {DEFAULT_MODEL} (bundled)")
    p.add_argument("--scenes", type=int, default=3, help="how many synthetic scenes")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--out", default="ofa-demo.png", help="picture of the scenes with their boxes")


@command("demo", _demo_args)
def cmd_demo(args: argparse.Namespace) -> int:
    """Caption, ground and answer on a few generated scenes (offline, bundled model)."""
    import numpy as np
    from PIL import Image

    from ..api import get_model
    from ..shapes.text import referring_expressions
    from ..shapes.world import generate_scene, render_scene
    from ..visualize import draw_boxes

    rng = np.random.default_rng(args.seed)
    scenes = [generate_scene(rng) for _ in range(args.scenes)]
    images = [render_scene(s) for s in scenes]
    texts = [(referring_expressions(s, 0) or ["the shape"])[0] for s in scenes]
    caption = get_model(args.model, task="caption")
    ground = get_model(args.model, task="refcoco")
    vqa = get_model(args.model, task="vqa")
    captions = caption(images)
    boxes = ground(images, text=texts)
    answers = vqa(images, question="how many shapes are there?")
    assert isinstance(captions, list) and isinstance(boxes, list) and isinstance(answers, list)
    tiles = []
    for i, img in enumerate(images):
        print(f"scene {i}: caption: {captions[i]['pred_caption']}")
        print(
            f"scene {i}: {texts[i]!r} -> box {[round(c) for c in (boxes[i]['pred_bboxes'] or [[]])[0]]}"
        )
        print(f"scene {i}: how many shapes are there? -> {answers[i]['pred_answer']}")
        tiles.append(draw_boxes(img, boxes[i]["pred_bboxes"], [texts[i]]))
    sheet = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)), "white")
    x = 0
    for t in tiles:
        sheet.paste(t, (x, 0))
        x += t.width
    sheet.save(args.out)
    print(f"saved {args.out}")
    return 0
