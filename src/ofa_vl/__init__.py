"""ofa-vl: a fast, faithful implementation of OFA (Wang et al., arXiv 2202.03052)."""

from .api import OFAPipeline, get_model, inference_model, list_models
from .bulk import predict
from .checkpoints import CheckpointError, convert, save_pretrained
from .config import OFAConfig
from .generation import GenerateOutput, Trie, generate
from .model import OFA, EncoderOutput, OFAOutput
from .onnx.export import export
from .tokenizer import OFATokenizer

__version__ = "0.1.0"

__all__ = [
    "OFA",
    "CheckpointError",
    "EncoderOutput",
    "GenerateOutput",
    "OFAConfig",
    "OFAOutput",
    "OFAPipeline",
    "OFATokenizer",
    "Trie",
    "convert",
    "export",
    "generate",
    "get_model",
    "inference_model",
    "list_models",
    "predict",
    "save_pretrained",
]
