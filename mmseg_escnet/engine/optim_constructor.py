"""An optimizer constructor in which ``custom_keys`` and the norm rule combine.

MMEngine's ``DefaultOptimWrapperConstructor`` ignores ``norm_decay_mult`` for every parameter a
``custom_keys`` entry matches. With ``custom_keys={'backbone': dict(lr_mult=0.01)}`` the norm
layers of a fully fine-tuned backbone then get weight decay, unlike detectron2's optimizer that
SED (xb534/SED, ``train_net.py``) and CAT-Seg use: there the backbone multiplier scales the learning
rate and norm layers (``nn.LayerNorm``, ``nn.GroupNorm``, batch norms, by type) still get no decay.

Here a custom key sets only what it names:

* ``lr_mult`` of the longest matching key that names one (else 1);
* ``decay_mult`` of the longest matching key that names one; else ``norm_decay_mult`` for the
  parameters of a norm layer; else 1.
"""
from typing import List, Optional

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

__all__ = ['NormAwareOptimWrapperConstructor']

_NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_SUPPORTED = {'custom_keys', 'norm_decay_mult'}


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class NormAwareOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` where norm layers keep ``norm_decay_mult`` under a
    custom key that sets only ``lr_mult``.

    ``paramwise_cfg`` may hold ``custom_keys`` (``{substring: dict(lr_mult=..., decay_mult=...)}``)
    and ``norm_decay_mult``; other paramwise options are refused rather than ignored.
    Frozen parameters are left out, as MMEngine does.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        unknown = set(self.paramwise_cfg) - _SUPPORTED
        if unknown:
            raise ValueError(f'NormAwareOptimWrapperConstructor supports paramwise_cfg keys '
                             f'{sorted(_SUPPORTED)}, got {sorted(unknown)}')
        for key, value in self.paramwise_cfg.get('custom_keys', {}).items():
            if not isinstance(value, dict) or set(value) - {'lr_mult', 'decay_mult'}:
                raise ValueError(f'custom_keys[{key!r}] must be a dict of lr_mult and/or '
                                 f'decay_mult, got {value!r}')

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        """Append one param group per trainable parameter of ``module`` to ``params``."""
        custom_keys = self.paramwise_cfg.get('custom_keys', {})
        keys = sorted(sorted(custom_keys), key=len, reverse=True)  # longest match first
        norm_decay_mult = self.paramwise_cfg.get('norm_decay_mult')
        for module_name, sub in module.named_modules(prefix=prefix):
            for name, param in sub.named_parameters(recurse=False):
                if not param.requires_grad:
                    continue
                full_name = f'{module_name}.{name}' if module_name else name
                matching = [custom_keys[k] for k in keys if k in full_name]
                lr_mult = next((c['lr_mult'] for c in matching if 'lr_mult' in c), 1.0)
                decay_mult = next((c['decay_mult'] for c in matching if 'decay_mult' in c), None)
                if decay_mult is None:
                    is_norm = isinstance(sub, _NORMS) and norm_decay_mult is not None
                    decay_mult = norm_decay_mult if is_norm else 1.0
                group = dict(params=[param], lr=self.base_lr * lr_mult)
                if self.base_wd is not None:
                    group['weight_decay'] = self.base_wd * decay_mult
                params.append(group)
