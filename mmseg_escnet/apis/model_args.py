"""The ``model`` and ``device`` arguments of :class:`~.inferencer.OpenVocabInferencer`.

``model`` is a config file only if its name ends with one of :data:`CONFIG_SUFFIXES` (what
``Config.fromfile`` reads); any other string is a model-zoo name, so a file named like a model in
the working directory (``./catseg_vitb16``) does not shadow the name. The rule is
:func:`mmseg_escnet.checkpoints.model_zoo.resolve_model`, shared by every entry point (the tools,
the demos, ``tools/misc/make_custom_config.py``).
"""
import torch

from ..checkpoints.model_zoo import CONFIG_SUFFIXES, resolve_model

__all__ = ['CONFIG_SUFFIXES', 'resolve_model', 'check_device']


def check_device(device: str, what: str = 'device') -> None:
    """Check that a torch device string is valid and usable here.

    Args:
        device (str): ``'cpu'``, ``'cuda'``, ``'cuda:1'``...
        what (str): How the device was given (``'device'``, ``'--device'``), for the messages.

    Raises:
        ValueError: Not a device name, or a CUDA device while CUDA is not available (the message
            says why: a CPU-only torch build, or no GPU/driver found) or out of range.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f'{what} {device!r} is not a torch device (cpu, cuda, cuda:1...): '
                         f'{err}') from err
    if parsed.type != 'cuda':
        return
    if not torch.cuda.is_available():
        why = ('this torch build has no CUDA support' if torch.version.cuda is None else
               f'torch is built for CUDA {torch.version.cuda} but finds no GPU or driver')
        raise ValueError(f'{what} {device!r}: CUDA is not available ({why}, torch '
                         f'{torch.__version__}); use {what} cpu')
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(f'{what} {device!r}: only {torch.cuda.device_count()} CUDA device(s) '
                         f'found')
