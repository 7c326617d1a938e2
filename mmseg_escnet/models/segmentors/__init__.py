"""Segmentors."""
from .lmseg_encoder_decoder import LMSegEncoderDecoder
from .open_vocab_encoder_decoder import OpenVocabEncoderDecoder

__all__ = ['LMSegEncoderDecoder', 'OpenVocabEncoderDecoder']
