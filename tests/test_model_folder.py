"""``ModelFolder``: pipeline.json read back as written, the bundled folder's as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from ofa_vl.errors import OFAValueError
from ofa_vl.generation import GenerationConfig
from ofa_vl.model_folder import PIPELINE_FILE, ModelFolder
from ofa_vl.overlay import Overlay
from ofa_vl.preprocess import PreprocessConfig
from ofa_vl.zoo import DEFAULT_MODEL, PACKAGE_ASSETS


def test_read_write_round_trip(tmp_path: Path) -> None:
    folder = ModelFolder(
        "vqa",
        Overlay.of(PreprocessConfig(), {"image_size": 96, "interpolation": "bicubic",
                                        "mean": [0.485, 0.456, 0.406], "text_norm": {"question": "clean"}}),
        Overlay.of(GenerationConfig(), {"num_beams": 2, "constraint_range": [4, 9]}),
    )  # fmt: skip
    assert ModelFolder.read(folder.write(tmp_path)) == folder
    assert ModelFolder.read(ModelFolder().write(tmp_path / "empty")) == ModelFolder()
    assert ModelFolder.read(tmp_path / "nothing") is None


def test_bundled_pipeline_json_is_rewritten_byte_for_byte(tmp_path: Path) -> None:
    bundled = PACKAGE_ASSETS / DEFAULT_MODEL
    settings = ModelFolder.read(bundled)
    assert settings is not None and settings.preprocessing.values()["image_size"] == 128
    out = settings.write(tmp_path)
    assert (out / PIPELINE_FILE).read_bytes() == (bundled / PIPELINE_FILE).read_bytes()


def test_a_bad_pipeline_json_is_one_line(tmp_path: Path) -> None:
    (tmp_path / PIPELINE_FILE).write_text('{"interpolation": "sideways"}')
    with pytest.raises(OFAValueError, match="pipeline.json: interpolation must be") as err:
        ModelFolder.read(tmp_path)
    assert "\n" not in str(err.value)
