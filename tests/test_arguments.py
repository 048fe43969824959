"""``ofa_vl.arguments``: flags generated from a config dataclass, and the config built back."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from ofa_vl.arguments import add_dataclass_args, flag, from_args, given


@dataclass(frozen=True)
class Config:
    root: Path = flag(help="where the data is")
    batch_size: int = flag(16, "images per batch")
    rate: float | None = flag(None, "a rate")
    name: str | Path | None = flag(None, "a name or a path")
    mode: Literal["fast", "exact"] = flag("fast", "how")
    strict: bool = flag(False, "refuse bad lines")
    progress: bool = flag(True, "show a bar")
    tags: list[str] = flag([], "tags", action="append", aliases=["--tag"])
    beams: int | None = flag(None, "")


def _parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_dataclass_args(p, Config, **kw)
    return p


def test_flags_take_their_type_help_and_default_from_the_fields() -> None:
    args = _parser().parse_args(["--root", "d", "--batch-size", "4", "--rate", "0.5", "--name",
                                 "n", "--mode", "exact", "--strict", "--no-progress", "--tag", "a",
                                 "--tags", "b"])  # fmt: skip
    config = from_args(Config, args)
    assert config == Config(Path("d"), 4, 0.5, "n", "exact", True, False, ["a", "b"])
    assert isinstance(config.root, Path) and isinstance(config.rate, float)
    text = _parser().format_help()
    assert "images per batch (default: 16)" in text and "--progress, --no-progress" in text
    assert "{fast,exact}" in text and re.search(
        r"--beams BEAMS +beams\n", text
    )  # no help: the field's name


def test_absent_flags_keep_the_dataclass_defaults() -> None:
    args = _parser().parse_args(["--root", "d"])
    assert given(Config, args) == {"root": Path("d")}
    config, fresh = from_args(Config, args), from_args(Config, args)
    assert config == Config(Path("d")) and config.tags == [] and config.tags is not fresh.tags


def test_bad_values_and_a_missing_required_flag_are_refused() -> None:
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        _parser().parse_args(["--root", "d", "--mode", "slow"])
    with pytest.raises(argparse.ArgumentError, match="invalid int"):
        _parser().parse_args(["--root", "d", "--batch-size", "x"])
    with pytest.raises(SystemExit):  # argparse exits on a missing required flag
        _parser().parse_args([])


def test_only_exclude_names_and_shown_defaults() -> None:
    p = _parser(only=["batch_size", "beams", "root"], exclude=["root"],
                names={"batch_size": ["--bs"]}, defaults={"batch_size": "the model's"},
                helps={"beams": "beam size"})  # fmt: skip
    text = p.format_help()
    assert "--root" not in text and "--mode" not in text and "--batch-size" not in text
    assert "images per batch (default: the model's)" in text and "beam size" in text
    assert given(Config, p.parse_args(["--bs", "3"])) == {"batch_size": 3}


def test_an_unsupported_field_type_is_named() -> None:
    @dataclass
    class Odd:
        table: dict[str, int] = flag({}, "a table")

    with pytest.raises(TypeError, match="no command-line flag"):
        add_dataclass_args(argparse.ArgumentParser(), Odd)
