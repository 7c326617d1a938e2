"""The segmentor's inference settings (``test_cfg``), parsed and checked once.

``test_cfg`` is a dict in the config; the segmentor parses it into an :class:`InferenceSettings`
when it is built and whenever it is changed (:meth:`OpenVocabEncoderDecoder.set_inference_settings`),
so a typo, a bad value or a crop layout that leaves pixels uncovered fails there, naming the key,
and no stage reads the dict again. The modes and their keys:

==================  ==============================================================================
``whole``           one view; ``resize_probabilities`` (resize sigmoid probabilities instead of
                    logits to the image size, as SED does)
``slide``           mmseg's sliding window: ``crop_size`` (h, w) and ``stride`` (h, w), required
``sliding_global``  CAT-Seg's protocol (:mod:`.sliding_global_inference`): ``kernel`` (384),
                    ``overlap`` (0.333), ``out_size`` (640, 640), ``views_per_batch`` (0: all)
every mode          ``class_filter``: None or ``dict(type=..., k=...)``
                    (:class:`~mmseg_escnet.models.structures.ClassFilter`);
                    ``precision``: ``'float32'`` (default), or ``'float16'`` / ``'bfloat16'``
                    autocast of the network on CUDA (:func:`precision_context`)
==================  ==============================================================================
"""
import contextlib
import dataclasses
from typing import Any, ContextManager, Dict, Iterator, Mapping, Optional, Tuple, Union

import torch

from ..structures import ClassFilter
from .sliding_global_inference import crop_offsets

__all__ = ['InferenceSettings', 'MODE_KEYS', 'ReadOnlyConfig', 'PRECISIONS', 'precision_context']

#: The ``test_cfg`` keys of every mode.
EVERY_MODE_KEYS = ('mode', 'class_filter', 'precision')
#: ``test_cfg.precision`` values: the autocast dtype of the network (None: float32, no autocast).
PRECISIONS: Dict[str, Optional[torch.dtype]] = {
    'float32': None, 'float16': torch.float16, 'bfloat16': torch.bfloat16}

#: The ``test_cfg`` keys each mode takes (besides ``mode`` and ``class_filter``).
MODE_KEYS: Dict[str, Tuple[str, ...]] = {
    'whole': ('resize_probabilities', ),
    'slide': ('crop_size', 'stride'),
    'sliding_global': ('kernel', 'overlap', 'out_size', 'views_per_batch'),
}


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """How the segmentor predicts in eval mode (a checked ``test_cfg``).

    Attributes:
        mode (str): ``'whole'``, ``'slide'`` or ``'sliding_global'``.
        class_filter (ClassFilter, optional): the test-time class filter.
        resize_probabilities (bool): ``whole``: resize probabilities, not logits.
        crop_size (tuple, optional): ``slide``: (h, w) crops.
        stride (tuple, optional): ``slide``: (h, w) strides.
        kernel (int): ``sliding_global``: crop side.
        overlap (float): ``sliding_global``: crop overlap in [0, 1).
        out_size (tuple): ``sliding_global``: (H, W) the image is squashed to.
        views_per_batch (int): ``sliding_global``: views per network call (0: all).
        precision (str): a key of :data:`PRECISIONS`, the network's autocast dtype on CUDA.
    """
    mode: str = 'whole'
    class_filter: Optional[ClassFilter] = None
    resize_probabilities: bool = False
    crop_size: Optional[Tuple[int, int]] = None
    stride: Optional[Tuple[int, int]] = None
    kernel: int = 384
    overlap: float = 0.333
    out_size: Tuple[int, int] = (640, 640)
    views_per_batch: int = 0
    precision: str = 'float32'

    @classmethod
    def from_cfg(cls, cfg: Union[None, Mapping[str, Any], 'InferenceSettings']
                 ) -> 'InferenceSettings':
        """Parse and check a ``test_cfg`` (None: ``whole`` without a filter).

        Raises:
            KeyError: for a key the mode does not take.
            ValueError: for a bad mode or value, naming it.
        """
        if isinstance(cfg, InferenceSettings):
            return cfg
        cfg = dict(cfg or {})
        mode = cfg.pop('mode', 'whole')
        if mode not in MODE_KEYS:
            raise ValueError(f'test_cfg.mode must be one of {sorted(MODE_KEYS)}, got {mode!r}')
        unknown = set(cfg) - set(MODE_KEYS[mode]) - set(EVERY_MODE_KEYS)
        if unknown:
            raise KeyError(f'test_cfg for mode {mode!r} has unknown keys {sorted(unknown)}; '
                           f'allowed: {sorted(EVERY_MODE_KEYS + MODE_KEYS[mode])}')
        precision = cfg.pop('precision', 'float32')
        if precision not in PRECISIONS:
            raise ValueError(f'test_cfg.precision must be one of {list(PRECISIONS)}, got '
                             f'{precision!r}')
        values: Dict[str, Any] = dict(mode=mode, precision=precision,
                                      class_filter=ClassFilter.from_cfg(cfg.pop('class_filter',
                                                                                None)))
        if mode == 'whole':
            values['resize_probabilities'] = _flag(cfg, 'resize_probabilities', False)
        elif mode == 'slide':
            for key in ('crop_size', 'stride'):
                if key not in cfg:
                    raise KeyError(f"test_cfg for mode 'slide' needs {key!r} (h, w)")
                values[key] = _pair(cfg, key, cfg[key])
        else:
            values.update(kernel=_int(cfg, 'kernel', 384, minimum=1),
                          views_per_batch=_int(cfg, 'views_per_batch', 0, minimum=0),
                          out_size=_pair(cfg, 'out_size', (640, 640)))
            overlap = cfg.get('overlap', 0.333)
            if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or \
                    not 0 <= overlap < 1:
                raise ValueError(f'test_cfg.overlap must be a number in [0, 1), got {overlap!r}')
            values['overlap'] = float(overlap)
            stride = int(values['kernel'] * (1 - values['overlap']))
            for size in values['out_size']:  # crops that leave pixels uncovered fail here
                crop_offsets(size, values['kernel'], stride)
        return cls(**values)

    def to_cfg(self) -> dict:
        """The ``test_cfg`` dict: ``mode``, ``class_filter``, the keys of the mode and
        ``precision`` unless float32 (a new dict every call)."""
        cfg = dict(mode=self.mode, class_filter=None if self.class_filter is None
                   else self.class_filter.to_cfg())
        cfg.update({key: getattr(self, key) for key in MODE_KEYS[self.mode]})
        if self.precision != 'float32':
            cfg['precision'] = self.precision
        return cfg

    def replace(self, **changes: Any) -> 'InferenceSettings':
        """These settings with ``changes`` (``test_cfg`` keys), checked.

        Changing ``mode`` drops the keys of the previous mode (the new mode's take their
        defaults unless given); the class filter is kept unless given.
        """
        cfg = self.to_cfg()
        if changes.get('mode', self.mode) != self.mode:
            cfg = dict(class_filter=cfg['class_filter'])
        return InferenceSettings.from_cfg({**cfg, **changes})


def precision_context(precision: str, device: torch.device) -> ContextManager:
    """The network's autocast for ``test_cfg.precision`` on ``device``.

    Raises:
        ValueError: for float16 / bfloat16 off CUDA (autocast on CPU was not measured faster:
            docs/efficiency.md), or bfloat16 on a GPU without it.
    """
    if PRECISIONS[precision] is None:
        return contextlib.nullcontext()
    if torch.device(device).type != 'cuda':
        raise ValueError(f'test_cfg.precision={precision!r} runs on CUDA only (autocast); this '
                         f"model runs on {torch.device(device).type}: use precision='float32'")
    if precision == 'bfloat16' and not torch.cuda.is_bf16_supported():
        raise ValueError("test_cfg.precision='bfloat16' needs a GPU with bfloat16 "
                         "(torch.cuda.is_bf16_supported() is False): use 'float16'")
    return torch.autocast('cuda', dtype=PRECISIONS[precision])


def _flag(cfg: Mapping, key: str, default: bool) -> bool:
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f'test_cfg.{key} must be True or False, got {value!r}')
    return value


def _int(cfg: Mapping, key: str, default: int, minimum: int) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'test_cfg.{key} must be an int >= {minimum}, got {value!r}')
    return value


def _pair(cfg: Mapping, key: str, default: Any) -> Tuple[int, int]:
    """An int or (h, w) of positive ints, as a tuple."""
    value = cfg.get(key, default)
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f'test_cfg.{key} must be a positive int or (h, w), got {value!r}')
    return tuple(pair)


class ReadOnlyConfig(Mapping):
    """A read-only ``test_cfg`` view with attribute access (what mmseg's code reads).

    Writing to it raises instead of silently changing a copy: settings change through
    ``model.set_inference_settings`` (or by assigning a whole new ``model.test_cfg``).
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, '_data', {
            key: ReadOnlyConfig(value) if isinstance(value, Mapping) else value
            for key, value in data.items()})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__['_data'][key]
        except KeyError:
            raise AttributeError(key) from None

    def __reduce__(self) -> tuple:  # copy, deepcopy and pickle rebuild it from a plain dict
        return ReadOnlyConfig, (self.to_dict(), )

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self.to_dict())

    def to_dict(self) -> dict:
        """A plain (writable) dict copy."""
        return {key: value.to_dict() if isinstance(value, ReadOnlyConfig) else value
                for key, value in self._data.items()}

    def _refuse(self, *args: Any) -> None:
        raise TypeError('model.test_cfg is read-only: change it with '
                        'model.set_inference_settings(model.inference_settings.replace(...)) or '
                        'assign a whole new dict to model.test_cfg')

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _refuse
