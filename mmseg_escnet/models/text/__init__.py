"""Class vocabularies, prompt templates and cached class text embeddings."""
from .class_embedder import ClassEmbedder, build_vocabulary
from .templates import CATSEG_TEMPLATES, available_template_sets, get_templates
from .vocabulary import Vocabulary, available_vocabularies, parse_vocabulary_text

__all__ = [
    'CATSEG_TEMPLATES', 'ClassEmbedder', 'Vocabulary', 'available_template_sets',
    'available_vocabularies', 'build_vocabulary', 'get_templates', 'parse_vocabulary_text'
]
