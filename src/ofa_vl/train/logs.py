"""``metrics.csv`` (one row per logged step; ``val_metric`` on validation steps) and ``loss.png``."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

METRICS_FILE = "metrics.csv"
PLOT_FILE = "loss.png"
METRIC_FIELDS = ("step", "epoch", "loss", "lr", "tokens_per_s", "elapsed_s", "val_metric")
_FORMATS = {"epoch": ".4f", "loss": ".7g", "lr": ".6g", "tokens_per_s": ".1f", "elapsed_s": ".1f",
            "val_metric": ".6g"}  # fmt: skip


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from (they will be logged again)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= last_step]
    write_metrics(path, rows, mode="w")


def write_metrics(path: Path, rows: Sequence[dict[str, Any]], mode: str = "a") -> None:
    new = mode == "w" or not path.is_file()
    with path.open(mode, newline="") as f:
        writer = csv.DictWriter(f, METRIC_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def format_row(row: dict[str, float]) -> dict[str, str]:
    """A metrics row as the text ``metrics.csv`` holds (absent values empty)."""
    out = {"step": str(int(row["step"]))}
    return out | {k: format(row[k], f) for k, f in _FORMATS.items() if k in row}


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as floats (a row holds only the values it logged)."""
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]


def plot_loss(
    steps: Sequence[float],
    losses: Sequence[float],
    path: Path,
    validation: Sequence[tuple[float, float]] = (),
    metric: str = "",
) -> None:
    """A loss-vs-step line chart drawn with Pillow; validation ``(step, value)`` points in orange
    on their own scale (right axis)."""
    w, h, m = 640, 400, 50
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle((m, m // 2, w - m // 2, h - m), outline="black")
    all_steps = [*steps, *(s for s, _ in validation)]
    if all_steps:
        s0, s1 = min(all_steps), max(all_steps)

        def curve(points: Sequence[tuple[float, float]], colour: str, left: bool) -> None:
            lo, hi = min(v for _, v in points), max(v for _, v in points)

            def xy(s: float, v: float) -> tuple[float, float]:
                x = m + (s - s0) / max(s1 - s0, 1e-9) * (w - 1.5 * m)
                return x, h - m - (v - lo) / max(hi - lo, 1e-9) * (h - 1.5 * m)

            draw.line([xy(s, v) for s, v in points], fill=colour, width=2)
            for s, v in points if len(points) < 50 else ():
                x, y = xy(s, v)
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
            x_text = 4 if left else w - m // 2 + 2
            draw.text((x_text, m // 2), f"{hi:.3g}", fill=colour)
            draw.text((x_text, h - m - 10), f"{lo:.3g}", fill=colour)

        if steps:
            curve(list(zip(steps, losses, strict=True)), "navy", left=True)
        if validation:
            curve(list(validation), "darkorange", left=False)
        draw.text((m, h - m + 6), f"{s0:.0f}", fill="black")
        draw.text((w - m - 20, h - m + 6), f"{s1:.0f}", fill="black")
    draw.text((w // 2 - 40, h - 20), "step", fill="black")
    draw.text((m + 6, m // 2 + 4), "training loss", fill="navy")
    if validation:
        draw.text((w // 2, m // 2 + 4), f"validation {metric}".rstrip(), fill="darkorange")
    img.save(path)


def plot_run(out: Path, metric: str = "") -> None:
    """``OUT/loss.png`` from ``OUT/metrics.csv``."""
    history = read_metrics(out / METRICS_FILE)
    losses = [r for r in history if "loss" in r]
    validation = [(r["step"], r["val_metric"]) for r in history if "val_metric" in r]
    plot_loss([r["step"] for r in losses], [r["loss"] for r in losses], out / PLOT_FILE,
              validation, metric)  # fmt: skip
