"""Refactors keep the models' numbers: tiny CAT-Seg and ESC-Net outputs, pinned bit for bit.

``tests/data/pinned/pinned_outputs.pt`` was written by ``make_pinned_outputs.py`` beside it; the
weights are derived from the parameter names, so :data:`RENAMED` maps a parameter that a refactor
renamed back to the name it had when the file was written.
"""
import importlib.util
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PINNED = osp.join(ROOT, 'tests', 'data', 'pinned')

#: (new prefix, prefix when the outputs were pinned), per model; empty since the outputs were
#: pinned again (the per-class work shared across classes moved them by at most 1.1e-7)
RENAMED = {'catseg': (), 'escnet': ()}


def _maker():
    spec = importlib.util.spec_from_file_location(
        'make_pinned_outputs', osp.join(PINNED, 'make_pinned_outputs.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _old_name(name: str, renames) -> str:
    for new, old in renames:
        if name.startswith(new):
            return old + name[len(new):]
    return name


@pytest.mark.parametrize('model_name', ['catseg', 'escnet'])
def test_outputs_are_unchanged(model_name):
    maker = _maker()
    expected = torch.load(osp.join(PINNED, 'pinned_outputs.pt'))[model_name]
    model = maker.build(model_name, lambda n: _old_name(n, RENAMED[model_name]))
    got = maker.outputs(model)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), (model_name, key,
                                              float((got[key].float() - value.float()).abs().max()))
