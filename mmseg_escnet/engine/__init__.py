"""Runner-side pieces: hooks, MMEngine's checkpoint schemes, launch helpers for the tools."""
from .checkpoint_fit_hook import CheckpointFitHook
from .checkpoint_hook import (SafeCheckpointHook, find_resume_checkpoint,
                              remove_stale_temporary_files)
from .optim_constructor import NormAwareOptimWrapperConstructor
from .vocabulary_check_hook import VocabularyCheckHook

__all__ = ['CheckpointFitHook', 'NormAwareOptimWrapperConstructor', 'SafeCheckpointHook',
           'find_resume_checkpoint', 'remove_stale_temporary_files', 'VocabularyCheckHook']
