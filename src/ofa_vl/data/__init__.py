"""Readers for the evaluation datasets in their published on-disk formats (mmpretrain layout)."""

from ofa_vl.data.coco_caption import CaptionSample, COCOCaption, load_caption_references
from ofa_vl.data.common import DatasetError, ImageDataset, load_pickle
from ofa_vl.data.refcoco import RefCOCO, RefSample
from ofa_vl.data.vqa import (
    VQASample,
    VQAv2,
    load_answer_vocab,
    load_object_tags,
    write_vqa_submission,
)

__all__ = [
    "COCOCaption",
    "CaptionSample",
    "DatasetError",
    "ImageDataset",
    "RefCOCO",
    "RefSample",
    "VQASample",
    "VQAv2",
    "load_answer_vocab",
    "load_caption_references",
    "load_object_tags",
    "load_pickle",
    "write_vqa_submission",
]
