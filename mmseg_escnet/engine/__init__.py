"""Runner-side pieces: safe checkpoint loading and saving, launch helpers, hooks."""
from .checkpoint_fit import CheckpointFitHook, CheckpointMismatchError, check_state_dict_fits
from .checkpoint_hook import SafeCheckpointHook, find_resume_checkpoint
from .vocabulary_check_hook import VocabularyCheckHook

__all__ = ['CheckpointFitHook', 'CheckpointMismatchError', 'check_state_dict_fits',
           'SafeCheckpointHook', 'find_resume_checkpoint', 'VocabularyCheckHook']
