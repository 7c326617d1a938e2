"""Inference on CPU in chunks (``layers/class_chunks.py``): the same numbers as whole passes.

Every per-class stage (Swin blocks, SAM blocks, decoders) and the class attention (per pixel) cut
their work into chunks under ``INFERENCE_CHUNK_BYTES`` when autograd is off on the CPU. With a
budget of one byte every chunk holds a single class or pixel: the tiny models' logits must equal
those of whole passes (budget 0) within float rounding.
"""
import importlib.util
import os.path as osp

import pytest
import torch

from mmseg_escnet.models.layers import class_chunks

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _maker():
    path = osp.join(ROOT, 'tests', 'data', 'pinned', 'make_pinned_outputs.py')
    spec = importlib.util.spec_from_file_location('make_pinned_outputs', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('model_name', ['catseg', 'escnet', 'sed', 'lmseg', 'errseg'])
def test_chunked_inference_equals_whole_passes(model_name, monkeypatch):
    maker = _maker()
    model = maker.build(model_name)
    monkeypatch.setattr(class_chunks, 'INFERENCE_CHUNK_BYTES', 0)
    whole = maker.outputs(model)

    sizes = []
    chunk_size = class_chunks.inference_chunk_size

    def recording(*args):
        sizes.append(chunk_size(*args))
        return sizes[-1]

    monkeypatch.setattr(class_chunks, 'INFERENCE_CHUNK_BYTES', 1)
    monkeypatch.setattr(class_chunks, 'inference_chunk_size', recording)
    chunked = maker.outputs(model)
    assert sizes and set(sizes) == {1}, 'every chunked stage runs one item at a time'
    for key, value in whole.items():
        if value.is_floating_point():
            diff = float((chunked[key] - value).abs().max())
            assert diff <= 1e-5, (key, diff)
        else:  # labels: near-ties of the random tiny models may flip with float rounding
            assert float((chunked[key] != value).float().mean()) <= 1e-3, key


def test_chunks_only_at_inference_on_the_cpu(monkeypatch):
    monkeypatch.setattr(class_chunks, 'INFERENCE_CHUNK_BYTES', 8 * 2**20)
    x = torch.zeros(1)
    with torch.no_grad():
        assert class_chunks.inference_chunk_size(None, 2**20, x) == 8
        assert class_chunks.inference_chunk_size(4, 2**20, x) == 4  # a configured size is kept
        assert class_chunks.inference_chunk_size(None, 2**30, x) == 1  # at least one item
        assert class_chunks.inference_chunk_size(None, None, x) is None  # no size known
        assert class_chunks.inference_chunk_size(None, 2**20, x.to('meta')) is None  # not CPU
    assert class_chunks.inference_chunk_size(None, 2**20, x) is None  # autograd on: training
    assert class_chunks.inference_chunk_size(16, 2**20, x) == 16
    monkeypatch.setattr(class_chunks, 'INFERENCE_CHUNK_BYTES', 0)
    with torch.no_grad():
        assert class_chunks.inference_chunk_size(None, 2**20, x) is None


def test_gradients_are_not_chunked(monkeypatch):
    """In training the passes stay whole: chunks without checkpointing save no memory."""
    from mmseg_escnet.models.layers.guided_swin import GuidedSwinBlockPair
    monkeypatch.setattr(class_chunks, 'INFERENCE_CHUNK_BYTES', 1)
    pair = GuidedSwinBlockPair(dim=8, guidance_dim=4, input_resolution=(4, 4), num_heads=2,
                               window_size=2)
    calls = []
    aggregate = pair._aggregate
    monkeypatch.setattr(pair, '_aggregate', lambda x, guidance: calls.append(x.shape[2])
                        or aggregate(x, guidance))
    x, guidance = torch.randn(1, 8, 3, 4, 4, requires_grad=True), torch.randn(1, 4, 4, 4)
    pair(x, guidance).sum().backward()
    assert calls == [3] and x.grad is not None
    with torch.no_grad():
        pair(x, guidance)
    assert calls == [3, 1, 1, 1]
