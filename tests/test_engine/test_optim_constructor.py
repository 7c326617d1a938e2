"""NormAwareOptimWrapperConstructor: custom keys and the norm rule combine (detectron2's rule)."""
import pytest
import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor

from mmseg_escnet.engine import NormAwareOptimWrapperConstructor


class Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.Linear(2, 2))
        self.head = nn.Sequential(nn.GroupNorm(1, 2), nn.LayerNorm(2), nn.Linear(2, 1))
        self.backbone[2].requires_grad_(False)  # frozen: left out


def _groups(constructor, paramwise_cfg):
    optim_cfg = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.5))
    net = Net()
    names = {id(p): n for n, p in net.named_parameters()}
    optimizer = constructor(optim_cfg, paramwise_cfg)(net).optimizer
    return {names[id(g['params'][0])]: (g['lr'], g['weight_decay'])
            for g in optimizer.param_groups if g['params']}


def test_norm_layers_keep_no_decay_under_an_lr_key():
    cfg = dict(custom_keys={'backbone': dict(lr_mult=0.01), 'head.1': dict(decay_mult=1.0)},
               norm_decay_mult=0.0)
    groups = _groups(NormAwareOptimWrapperConstructor, cfg)
    assert groups == {
        'backbone.0.weight': (0.01, 0.5), 'backbone.0.bias': (0.01, 0.5),
        'backbone.1.weight': (0.01, 0.0), 'backbone.1.bias': (0.01, 0.0),  # norm in backbone
        'head.0.weight': (1.0, 0.0), 'head.0.bias': (1.0, 0.0),            # GroupNorm
        'head.1.weight': (1.0, 0.5), 'head.1.bias': (1.0, 0.5),            # named decay wins
        'head.2.weight': (1.0, 0.5), 'head.2.bias': (1.0, 0.5)}
    # MMEngine's default drops the norm rule under the custom key
    default = _groups(DefaultOptimWrapperConstructor, cfg)
    assert default['backbone.1.weight'] == (0.01, 0.5)


@pytest.mark.parametrize('cfg', [dict(bias_lr_mult=2.0),
                                 dict(custom_keys={'head': dict(lr=0.1)})])
def test_unsupported_options_are_refused(cfg):
    with pytest.raises(ValueError, match='supports|must be a dict'):
        _groups(NormAwareOptimWrapperConstructor, cfg)
