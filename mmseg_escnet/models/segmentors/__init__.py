"""Segmentors."""
from .errseg_encoder_decoder import ERRSegEncoderDecoder
from .lmseg_encoder_decoder import LMSegEncoderDecoder
from .open_vocab_encoder_decoder import OpenVocabEncoderDecoder

__all__ = ['ERRSegEncoderDecoder', 'LMSegEncoderDecoder', 'OpenVocabEncoderDecoder']
