"""Drawing results on images (``ofa ground --save``, the demo, the web page's server side)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

COLORS = ("#ff3b30", "#34c759", "#007aff", "#ff9500", "#af52de")


def draw_boxes(
    image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str] = ()
) -> Image.Image:
    """A copy of ``image`` with each ``[x1, y1, x2, y2]`` box outlined and labelled."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(min(out.size) / 150))
    for i, box in enumerate(boxes):
        color = COLORS[i % len(COLORS)]
        draw.rectangle([float(c) for c in box], outline=color, width=width)
        if i < len(labels) and labels[i]:
            x, y = float(box[0]), max(float(box[1]) - 12, 0)
            draw.rectangle(draw.textbbox((x, y), labels[i]), fill=color)
            draw.text((x, y), labels[i], fill="white")
    return out
