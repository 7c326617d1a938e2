"""Refuse checkpoints made for another model instead of loading what happens to fit.

:class:`CheckpointFitHook` checks every checkpoint the Runner loads (``load_from``, ``--resume``,
``tools/test.py``) with :func:`~mmseg_escnet.checkpoints.check_state_dict_fits`. Fine-tuning from
a checkpoint of another model (e.g. another head) stays possible with the config key
``load_from_strict = False``.
"""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from ..checkpoints.state_dict_fit import check_state_dict_fits, checkpoint_state_dict

__all__ = ['CheckpointFitHook']


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Check every checkpoint the Runner loads against the model before MMEngine loads it.

    Skipped when the config sets ``load_from_strict = False`` (MMEngine's non-strict loading,
    for fine-tuning from another model); ``--resume`` is always checked.
    """

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Called by ``Runner.load_checkpoint`` before the weights go into the model."""
        if not runner._resume and not runner.cfg.get('load_from_strict', True):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        source = runner._load_from or 'the resumed checkpoint'
        state = checkpoint_state_dict(checkpoint, source)
        target = f'the model of {runner.cfg.filename or type(model).__name__}'
        check_state_dict_fits(model, state, source=source, target=target)
