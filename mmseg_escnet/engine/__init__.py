"""Runner-side pieces: safe checkpoint loading, launch helpers, hooks."""
from .vocabulary_check_hook import VocabularyCheckHook

__all__ = ['VocabularyCheckHook']
