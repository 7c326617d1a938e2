# SED's optimisation recipe (xb534/SED, configs/config.yaml, convnext*_768.yaml, train_net.py): as
# CAT-Seg's (catseg_80k.py): AdamW 2e-4, weight decay 1e-4, the CLIP image tower at x0.01, clipping
# at full-model L2 norm 0.01, cosine without warm-up, 80k iterations at a total batch of 4. Decay
# follows detectron2's rule: 0 for norm layers (nn.LayerNorm/GroupNorm subclasses, the CLIP trunk's
# included, which MMEngine's default constructor would decay under the 'backbone' key), but the
# decoder's ConvNeXt-block norms (SED's own LayerNorm class, not nn.LayerNorm) and every layer
# scale gamma are decayed, as official.
_base_ = ['./catseg_80k.py']
optim_wrapper = dict(
    constructor='NormAwareOptimWrapperConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        custom_keys={
            'backbone': dict(lr_mult=0.01),
            **{f'decode_head.decoder{i}.cnext.norm': dict(decay_mult=1.0) for i in (1, 2, 3)},
        },
        norm_decay_mult=0.0))
train_cfg = dict(val_interval=10000)  # EVAL_PERIOD 10000
