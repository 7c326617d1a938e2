"""Class text embeddings of a vocabulary, cached per vocabulary (the vocabularies themselves are
in :mod:`mmseg_escnet.text`)."""
from .class_embedder import ClassEmbedder, build_vocabulary

__all__ = ['ClassEmbedder', 'build_vocabulary']
