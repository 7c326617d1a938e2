"""LMSeg's parts: SAM's image encoder with official weights, the SAM/CLIP fusion, the segmentor."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                       TwoWayTransformer)

import mmseg_escnet  # noqa: F401
from mmseg_escnet.models.backbones.sam_image_encoder import (CLIP_MEAN, CLIP_STD, SAM_ARCHS,
                                                             SAMImageEncoder,
                                                             resize_sam_encoder_weights)
from mmseg_escnet.models.layers.sam_clip_fusion import SAMCLIPFusion

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
TINY_ARCH = dict(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1, ))


def _official_sam(img_size=64, seed=0):
    """A randomly initialised segment_anything ``Sam`` (tiny encoder), as the official builder
    assembles it, with non-zero position tables so that resizing them matters."""
    torch.manual_seed(seed)
    encoder = ImageEncoderViT(img_size=img_size, patch_size=8, embed_dim=32, depth=2,
                              num_heads=2, out_chans=16, use_rel_pos=True, window_size=4,
                              global_attn_indexes=(1, ),
                              norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6))
    grid = img_size // 8
    sam = Sam(image_encoder=encoder,
              prompt_encoder=PromptEncoder(embed_dim=16, image_embedding_size=(grid, grid),
                                           input_image_size=(img_size, img_size),
                                           mask_in_chans=4),
              mask_decoder=MaskDecoder(transformer_dim=16, transformer=TwoWayTransformer(
                  depth=2, embedding_dim=16, mlp_dim=32, num_heads=2)))
    with torch.no_grad():
        for name, param in sam.image_encoder.named_parameters():
            if 'pos' in name:
                param.normal_()
    return sam.eval()


def _ours(checkpoint, img_size=64, **kwargs):
    encoder = SAMImageEncoder(arch=TINY_ARCH, img_size=img_size, patch_size=8, window_size=4,
                              out_chans=16, checkpoint=checkpoint, **kwargs)
    encoder.init_weights()
    return encoder


def test_official_weights_give_sams_own_features(tmp_path):
    """Our encoder on a CLIP-normalised image = SAM's encoder on SAM's preprocessing of it."""
    sam = _official_sam()
    path = str(tmp_path / 'sam_tiny.pth')
    torch.save(sam.state_dict(), path)
    ours = _ours(path).eval()
    torch.manual_seed(1)
    raw = torch.rand(2, 3, 64, 64) * 255  # RGB 0-255 at SAM's input size
    clip_input = (raw - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = sam.image_encoder(sam.preprocess(raw))
    torch.testing.assert_close(ours(clip_input), expected, rtol=1e-4, atol=1e-4)


def test_other_input_sizes_resize_the_position_tables(tmp_path):
    sam = _official_sam(img_size=64)
    path = str(tmp_path / 'sam_tiny.pth')
    torch.save(sam.state_dict(), path)
    ours = _ours(path, img_size=96)  # 12 x 12 tokens instead of 8 x 8
    assert ours.image_encoder.pos_embed.shape == (1, 12, 12, 32)
    assert ours.image_encoder.blocks[1].attn.rel_pos_h.shape[0] == 23  # global block: 2 g - 1
    assert ours.image_encoder.blocks[0].attn.rel_pos_h.shape[0] == 7   # window 4: unchanged
    assert ours(torch.randn(1, 3, 40, 40)).shape == (1, 16, 12, 12)
    # the resized relative table is the one segment_anything's get_rel_pos would interpolate
    from segment_anything.modeling.image_encoder import get_rel_pos
    table = sam.image_encoder.blocks[1].attn.rel_pos_h.detach()
    torch.testing.assert_close(ours.image_encoder.blocks[1].attn.rel_pos_h.detach()[
        torch.arange(12)[:, None] - torch.arange(12)[None, :] + 11], get_rel_pos(12, 12, table))
    state = sam.image_encoder.state_dict()
    same = resize_sam_encoder_weights(state, 8)  # the checkpoint's own grid: unchanged
    assert all(same[k] is v for k, v in state.items())


def test_bad_checkpoints_are_named(tmp_path):
    decoder_only = {k: v for k, v in _official_sam().state_dict().items()
                    if not k.startswith('image_encoder.')}
    torch.save(decoder_only, tmp_path / 'decoder.pth')
    with pytest.raises(ValueError, match='no SAM image encoder'):
        _ours(str(tmp_path / 'decoder.pth'))
    sam = _official_sam()
    torch.save(sam.state_dict(), tmp_path / 'sam.pth')
    with pytest.raises(Exception, match='does not fit SAMImageEncoder'):
        SAMImageEncoder(arch=dict(TINY_ARCH, depth=3), img_size=64, patch_size=8, window_size=4,
                        out_chans=16, checkpoint=str(tmp_path / 'sam.pth')).init_weights()
    with pytest.raises(ValueError, match='arch must be one of'):
        SAMImageEncoder(arch='vit_x')
    with pytest.raises(ValueError, match='multiple of patch_size'):
        SAMImageEncoder(arch=TINY_ARCH, img_size=100)
    assert set(SAM_ARCHS) == {'vit_b', 'vit_l', 'vit_h'}


def test_a_frozen_encoder_has_no_gradient_and_stays_in_eval_mode():
    encoder = SAMImageEncoder(arch=TINY_ARCH, img_size=32, patch_size=8, window_size=2,
                              out_chans=16).train()
    assert not encoder.image_encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder(torch.randn(1, 3, 32, 32, requires_grad=True)).requires_grad
    trainable = SAMImageEncoder(arch=TINY_ARCH, img_size=32, patch_size=8, window_size=2,
                                out_chans=16, frozen=False).train()
    assert trainable.image_encoder.training and trainable(torch.randn(1, 3, 32, 32)).requires_grad


def test_scalar_fusion_is_the_sigmoid_weighted_sum_of_clip_and_adapted_sam():
    torch.manual_seed(0)
    fusion = SAMCLIPFusion(sam_dim=16, clip_dim=8, mode='scalar', init_weight=0.7,
                           zero_init_adapter=False)
    clip, sam = torch.randn(2, 8, 6, 6), torch.randn(2, 16, 3, 3)
    adapted = fusion.adapter(torch.nn.functional.interpolate(sam, size=(6, 6), mode='bilinear',
                                                             align_corners=False))
    torch.testing.assert_close(fusion(clip, sam), 0.7 * clip + 0.3 * adapted)
    with torch.no_grad():
        fusion.weight_logit.fill_(2.0)
    w = torch.sigmoid(torch.tensor(2.0))
    torch.testing.assert_close(fusion(clip, sam), w * clip + (1 - w) * adapted)


def test_pixel_fusion_weights_each_pixel_and_zero_adapter_starts_at_clip():
    torch.manual_seed(0)
    fusion = SAMCLIPFusion(sam_dim=16, clip_dim=8, mode='pixel', hidden_dim=4, init_weight=0.5)
    clip, sam = torch.randn(2, 8, 6, 6), torch.randn(2, 16, 12, 12)
    weight = fusion.clip_weight(clip, fusion.adapt(sam, (6, 6)))
    assert weight.shape == (2, 1, 6, 6) and weight.std() > 0  # a weight per pixel
    # zero-initialised adapter: F = w * F_c, so the cosine cost is CLIP's own
    torch.testing.assert_close(fusion(clip, sam), weight * clip)
    with pytest.raises(ValueError, match='fusion mode'):
        SAMCLIPFusion(mode='gate')
    with pytest.raises(ValueError, match='init_weight'):
        SAMCLIPFusion(init_weight=1.0)


def _tiny_cfg():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'lmseg_tiny_synthetic.py'))
    init_default_scope('mmseg')
    return cfg


def test_segmentor_fuses_before_the_cost_volume():
    """The neck gets the fused features (cost and appearance guidance), the head CLIP's."""
    cfg = _tiny_cfg()
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    seen = {}
    model.neck.register_forward_pre_hook(lambda m, args: seen.update(neck=args))
    images = torch.randn(1, 3, 96, 96)
    model._forward(images)
    clip_dense, _ = super(type(model), model).image_features(images)
    fused = model.fusion(clip_dense, model.sam_encoder(images))
    torch.testing.assert_close(seen['neck'][0], fused)
    assert not torch.allclose(fused, clip_dense)
    cfg.model.fusion.sam_dim = 8
    with pytest.raises(ValueError, match='sam_dim'):
        MODELS.build(cfg.model)


def test_benchmark_settings_filter_to_32_classes(tmp_path):
    """LMSeg's test settings: top-32 category filtering, here on 40 classes."""
    cfg = _tiny_cfg()
    cfg.model.test_cfg = Config.fromfile(osp.join(
        ROOT, 'configs', '_base_', 'benchmarks', 'lmseg_protocol.py')).lmseg_test_cfg
    cfg.model.test_cfg.update(kernel=96, out_size=(96, 96))
    classes = [f'class {i}' for i in range(40)]
    cfg.model.test_vocabulary = classes
    model = MODELS.build(cfg.model).eval()
    with pytest.warns(UserWarning, match='no descriptions for 40 class'):
        sample = model.predict(torch.randn(1, 3, 96, 96))[0]
    assert len(sample.metainfo['seg_logits_classes']) == 32
    assert sample.pred_sem_seg.data.unique().tolist() <= sorted(
        sample.metainfo['seg_logits_classes'].tolist())
