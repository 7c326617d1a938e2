"""Class vocabularies (names, synonyms, built-in class lists) and prompt templates.

Plain text data with no model code: every other part of the package may use it.
"""
from .templates import CATSEG_TEMPLATES, available_template_sets, get_templates
from .vocabulary import (Vocabulary, available_vocabularies, builtin_vocabulary,
                         parse_vocabulary_text)

__all__ = [
    'CATSEG_TEMPLATES', 'Vocabulary', 'available_template_sets', 'available_vocabularies',
    'builtin_vocabulary', 'get_templates', 'parse_vocabulary_text'
]
