"""Every config trains under DDP: each trainable parameter gets a gradient, and the learning rates.

DDP (without ``find_unused_parameters``) waits for a gradient of every parameter that requires
one; a trainable parameter outside the autograd graph stalls the second iteration. Each config is
built tiny (a tiny CLIP, 32-wide neck and head, a tiny official-format SAM checkpoint where the
config loads one) with every other setting kept, then one training step runs on random images.
"""
import glob
import os.path as osp

import open_clip
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmengine.structures import PixelData
from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                       TwoWayTransformer)

import mmseg_escnet  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BENCHMARKS = ('a847', 'pc459', 'a150', 'pc59', 'pas20', 'pas20b')
# <model>_<benchmark>.py train exactly as <model>.py (tests/test_configs.py checks that only their
# test settings differ), so the trained models are the other configs.
CONFIGS = [p for p in sorted(glob.glob(osp.join(ROOT, 'configs', '*.py')))
           if osp.splitext(p)[0].rsplit('_', 1)[-1] not in BENCHMARKS]
TINY = 96  # image side; patch 4 -> the 24 x 24 grid of the paper models
WIDTH = 32
CLASSES = ['sky', 'grass', 'sand', 'snow', 'brick']


def _save_tiny_sam(path: str) -> None:
    """A randomly initialised official SAM with a WIDTH-wide decoder, saved as published."""
    torch.manual_seed(1)
    sam = Sam(image_encoder=ImageEncoderViT(img_size=64, patch_size=16, embed_dim=16, depth=1,
                                            num_heads=1, out_chans=WIDTH, use_rel_pos=True,
                                            window_size=2, global_attn_indexes=(0, )),
              prompt_encoder=PromptEncoder(embed_dim=WIDTH, image_embedding_size=(4, 4),
                                           input_image_size=(64, 64), mask_in_chans=16),
              mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=WIDTH,
                                       transformer=TwoWayTransformer(depth=2, embedding_dim=WIDTH,
                                                                     mlp_dim=64, num_heads=2)))
    torch.save(sam.state_dict(), path)


def tiny_model_cfg(model: Config, sam_checkpoint: str) -> Config:
    """``model`` with every width shrunk and every other setting (fine-tuning policy, ESC
    blocks, prompts, SAM initialisation, LMSeg's fusion, pooling, padding, ...) kept."""
    model.data_preprocessor.size = (TINY, TINY)
    model.clip_resolution = TINY
    templates = model.vocabulary.get('templates', 'catseg')
    if isinstance(templates, dict):  # LMSeg's descriptions: the shipped ones of CLASSES
        templates = dict(templates, file='synthetic_shapes')
    model.vocabulary = dict(classes=CLASSES, templates=templates)
    model.test_vocabulary = None
    if model.type == 'LMSegEncoderDecoder':  # a tiny SAM encoder: 64 px, 4 x 4 tokens
        model.sam_encoder.update(arch=dict(embed_dim=16, depth=1, num_heads=1,
                                           global_attn_indexes=(0, )),
                                 img_size=64, patch_size=16, window_size=2, out_chans=WIDTH)
        if model.sam_encoder.get('checkpoint') is not None:
            model.sam_encoder.checkpoint = sam_checkpoint
        model.fusion.update(sam_dim=WIDTH, clip_dim=WIDTH, hidden_dim=8)
    if model.type == 'ERRSegEncoderDecoder':
        return tiny_errseg_cfg(model)
    if model.backbone.type == 'CLIPConvNeXtBackbone':
        return tiny_sed_cfg(model)
    model.backbone.update(
        model_name=None, pretrained=None, out_indices=(0, 1),
        model_cfg=dict(embed_dim=WIDTH,
                       vision_cfg=dict(image_size=TINY, layers=3, width=64, head_width=32,
                                       patch_size=4),
                       text_cfg=dict(context_length=16, vocab_size=49408, width=64, heads=2,
                                     layers=2)))
    neck = model.neck
    if neck.type == 'CATSegAggregator':
        neck.update(embed_dim=WIDTH, text_guidance_dim=WIDTH, appearance_guidance_dim=WIDTH,
                    num_heads=2, hidden_dim=WIDTH)
    else:
        neck.update(embed_dim=WIDTH, hidden_dim=WIDTH, sam_dim=WIDTH, sam_num_heads=2,
                    sam_mlp_dim=64, num_heads=2, appearance_guidance_dim=WIDTH,
                    text_guidance_dim=WIDTH)
        if neck.get('sam_checkpoint') is not None:
            neck.sam_checkpoint = sam_checkpoint
    model.decode_head.update(clip_width=64, upsample_dims=(32, 16),
                             decoder_guidance_proj_dims=(16, 8), decoder_dims=(32, 16),
                             hidden_dim=WIDTH, num_classes=len(CLASSES))
    return model


def tiny_convnext_clip(backbone: Config, dims) -> None:
    """Shrink a ``CLIPConvNeXtBackbone`` config to a one-block-per-stage trunk of ``dims`` and a
    WIDTH-wide CLIP; its projection head type (linear or MLP) and other options are kept."""
    arch = backbone.get('model_cfg') or open_clip.get_model_config(backbone.model_name)
    head = arch['vision_cfg']['timm_proj']
    backbone.update(
        model_name=None, pretrained=None, trunk_cfg=dict(depths=(1, 1, 1, 1), dims=dims),
        model_cfg=dict(embed_dim=WIDTH,
                       vision_cfg=dict(timm_model_name='convnext_base',
                                       timm_model_pretrained=False, timm_pool='',
                                       timm_proj=head, image_size=TINY),
                       text_cfg=dict(context_length=16, vocab_size=49408, width=32, heads=2,
                                     layers=1)))


def tiny_sed_cfg(model: Config) -> Config:
    """SED with a tiny ConvNeXt CLIP (stage widths 16-48) and a 16-wide decoder; the MLP or
    linear head, the fine-tuning policy, the templates and the pooling are kept."""
    tiny_convnext_clip(model.backbone, (16, 24, 32, 48))
    model.neck.update(hidden_dim=WIDTH)
    model.decode_head.update(hidden_dim=WIDTH, decoder_dims=(32, 16, 16),
                             decoder_guidance_dims=(32, 24, 16),
                             decoder_guidance_proj_dims=(8, 8, 8), num_classes=len(CLASSES))
    return model


def tiny_errseg_cfg(model: Config) -> Config:
    """ERR-Seg with a tiny ConvNeXt CLIP (stage widths 16-64, the last twice the third as in
    ConvNeXt-B/L) with the stride-16 branch, a WIDTH-wide neck that keeps 3 of the 5 classes per
    image in training (the ground-truth classes first, the others pruned) and a 16-wide decoder;
    the head type, the fine-tuning policy, the number of RRCA layers and their reduction, the
    pooling and the templates are kept."""
    tiny_convnext_clip(model.backbone, (16, 24, 32, 64))
    model.neck.update(corr_fpn_inter_dim=16, guidance_fpn_inter_dim=16, aggregator_dim=WIDTH,
                      num_heads=2, sample_classes_num=3)
    model.decode_head.update(hidden_dim=WIDTH, decoder_dims=(32, 16, 16),
                             decoder_guidance_proj_dims=(8, 8, 8), num_classes=len(CLASSES))
    return model


def _batch(batch_size: int = 2):
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch_size, 3, TINY, TINY, generator=gen)
    samples = []
    for _ in range(batch_size):
        label = torch.randint(0, len(CLASSES), (1, TINY, TINY), generator=gen)
        label[:, :8] = 255  # some ignored pixels
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=(TINY, TINY), ori_shape=(TINY, TINY),
                                 pad_shape=(TINY, TINY)))
        samples.append(sample)
    return inputs, samples


@pytest.fixture(scope='module')
def tiny_sam(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('sam') / 'sam_tiny.pth')
    _save_tiny_sam(path)
    return path


def _build(path: str, sam_checkpoint: str):
    cfg = Config.fromfile(path)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(cfg.model, sam_checkpoint))
    model.init_weights()
    return cfg, model.train()


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_every_trainable_parameter_gets_a_gradient(path, tiny_sam):
    _, model = _build(path, tiny_sam)
    inputs, samples = _batch()
    losses = model.loss(inputs, samples)
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    missing = sorted(n for n, p in trainable.items() if p.grad is None)
    assert not missing, f'{osp.basename(path)}: trainable parameters without a gradient: {missing}'
    # and none of them is only formally in the graph: each moves under the loss. ERR-Seg's RRCA
    # attention adds a bias to every key (official: k.bias, and norm_k.bias before the spatial
    # key projection), which softmax ignores: their gradient is zero but for float rounding (about
    # 1e-12 here). They are in the graph (grad is not None), so DDP needs neither freezing them
    # nor find_unused_parameters; they are not checked for movement.
    zero = sorted(n for n, p in trainable.items()
                  if not p.grad.abs().sum() > 0 and not _inert_key_bias(n))
    assert not zero, f'{osp.basename(path)}: trainable parameters with an all-zero gradient: {zero}'


def _inert_key_bias(name: str) -> bool:
    """ERR-Seg's key biases that softmax ignores (a constant added to every key of a query)."""
    return name.startswith('neck.aggregator_layers.') and name.endswith(
        ('.spatial_fusion.attention.k.bias', '.spatial_fusion.attention.norm_k.bias',
         '.class_fusion.attention.k.bias'))


def _lr(optim_wrapper, param):
    for group in optim_wrapper.optimizer.param_groups:
        if any(p is param for p in group['params']):
            return group['lr']
    raise KeyError('parameter not in the optimizer')


@pytest.mark.parametrize('name, sam_lr', [('escnet_vitl14.py', 2e-6),
                                          ('escnet_vitl14_sam_random.py', 2e-4)])
def test_sam_learning_rates(name, sam_lr, tiny_sam):
    """Pretrained SAM parts learn at 2e-6 like CLIP (paper §4.3); randomly initialised ones
    (Table 2 (b)) at the base 2e-4; the new layers of the SAM blocks always at 2e-4."""
    cfg, model = _build(osp.join(ROOT, 'configs', name), tiny_sam)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    neck = model.neck
    block = neck.sam_blocks[0]
    assert _lr(optim_wrapper, block.block.self_attn.q_proj.weight) == pytest.approx(sam_lr)
    assert _lr(optim_wrapper, block.output_tokens.weight) == pytest.approx(sam_lr)
    assert _lr(optim_wrapper, neck.prompt_encoder.point_embeddings[1].weight) == pytest.approx(
        sam_lr)
    assert _lr(optim_wrapper, block.text_proj.weight) == pytest.approx(2e-4)
    assert _lr(optim_wrapper, block.fuse.weight) == pytest.approx(2e-4)
    assert _lr(optim_wrapper, neck.vlf_blocks[0].guidance_projection[0].weight) == pytest.approx(
        2e-4)


def test_lmseg_learning_rates(tiny_sam):
    """LMSeg: CLIP at x0.01 (CAT-Seg's recipe), the adapter and the fusion weight at the base
    rate; the SAM encoder is frozen (x0.01 is set for when it is unfrozen)."""
    cfg, model = _build(osp.join(ROOT, 'configs', 'lmseg_vitb16.py'), tiny_sam)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert _lr(optim_wrapper, model.fusion.adapter.weight) == pytest.approx(2e-4)
    assert _lr(optim_wrapper, model.fusion.weight_logit) == pytest.approx(2e-4)
    clip = next(p for p in model.backbone.parameters() if p.requires_grad)
    assert _lr(optim_wrapper, clip) == pytest.approx(2e-6)
    encoder = model.sam_encoder.image_encoder
    assert not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(KeyError):  # frozen: not in the optimizer
        _lr(optim_wrapper, encoder.patch_embed.proj.weight)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['sam_encoder'] == dict(lr_mult=0.01)


def _group(optim_wrapper, param):
    for group in optim_wrapper.optimizer.param_groups:
        if any(p is param for p in group['params']):
            return group
    raise KeyError('parameter not in the optimizer')


def test_errseg_learning_rates_and_weight_decay(tiny_sam):
    """ERR-Seg (train_net.py build_optimizer): every trained CLIP parameter at x0.01, the rest at
    2e-4; weight decay 1e-4 but 0 for norm layers (the RRCA LayerNorms, the decoder GroupNorms);
    CLIP's frozen parameters are not optimised; no gradient clipping."""
    cfg, model = _build(osp.join(ROOT, 'configs', 'errseg_convnext_base.py'), tiny_sam)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert 'clip_grad' not in cfg.optim_wrapper
    clip = model.backbone.clip_model
    block = clip.visual.trunk.stages[0].blocks[0]
    text_block = clip.transformer.resblocks[0]
    for param in (block.mlp.fc1.weight, block.conv_dw.weight, block.gamma,
                  text_block.attn.in_proj_weight, text_block.mlp.c_fc.weight):
        assert _group(optim_wrapper, param)['lr'] == pytest.approx(2e-6)
        assert _group(optim_wrapper, param)['weight_decay'] == pytest.approx(1e-4)
    for param in (block.mlp.fc1.bias, block.norm.weight, clip.visual.modify_downsample[2].weight,
                  text_block.attn.out_proj.weight):  # frozen ('weight' policy)
        with pytest.raises(KeyError):
            _group(optim_wrapper, param)
    layer = model.neck.aggregator_layers[0]
    head = model.decode_head
    for param, decay in ((layer.spatial_fusion.attention.q.weight, 1e-4),
                         (layer.spatial_fusion.norm1.weight, 0.0),
                         (layer.spatial_fusion.attention.norm_k.bias, 0.0),
                         (layer.class_fusion.norm2.bias, 0.0),
                         (head.up_decoder1.textual_fusion.double_conv[1].weight, 0.0),
                         (head.up_decoder1.textual_fusion.double_conv[0].weight, 1e-4),
                         (head.head.weight, 1e-4)):
        group = _group(optim_wrapper, param)
        assert group['lr'] == pytest.approx(2e-4)
        assert group['weight_decay'] == pytest.approx(decay)
