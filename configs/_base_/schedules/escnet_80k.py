# ESC-Net (paper §4.3): AdamW, CLIP and the pretrained SAM parts at 2e-6, the rest at 2e-4. Everything the
# paper does not state follows CAT-Seg (catseg_80k.py): weight decay 1e-4 (0 for norms), clipping 0.01,
# cosine without warm-up, 80k iterations at a total batch of 4.
_base_ = ['./catseg_80k.py']
num_blocks = 4
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'backbone': dict(lr_mult=0.01),
        'neck.prompt_encoder': dict(lr_mult=0.01),
        'neck.sam_blocks': dict(lr_mult=0.01),
        # new layers inside the SAM blocks learn at the full rate (the longest matching key wins)
        **{f'neck.sam_blocks.{k}.{name}': dict(lr_mult=1.0)
           for k in range(num_blocks) for name in ('text_proj', 'fuse')},
    }))
