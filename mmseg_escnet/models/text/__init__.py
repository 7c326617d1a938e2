"""Class text embeddings of a vocabulary, cached per vocabulary (the vocabularies themselves are
in :mod:`mmseg_escnet.text`)."""
from .class_embedder import ClassEmbedder, TextEncoder, build_vocabulary

__all__ = ['ClassEmbedder', 'TextEncoder', 'build_vocabulary']
