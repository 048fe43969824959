"""The OFA network: a 3-stage ResNet, a NormFormer encoder and decoder, a tied output head."""

from .decoder import Decoder, DecoderState
from .encoder import Encoder, EncoderOutput
from .ofa import OFA, OFAOutput

__all__ = ["OFA", "OFAOutput", "Decoder", "DecoderState", "Encoder", "EncoderOutput"]
