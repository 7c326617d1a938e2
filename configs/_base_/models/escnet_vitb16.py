# ESC-Net with CLIP ViT-B/16 at 384 px (24 x 24 grid): CLIP backbone -> ESCNeck (4 x [PPG -> SAM block ->
# VLF]) -> U-Net head. Every reading of what the paper leaves open is an argument here; see docs/escnet.md.
_base_ = ['./catseg_vitb16.py']
# Official SAM checkpoint (vit_h; vit_b and vit_l have identical decoders). Read by init_weights() when
# training starts, never at construction; a local path works too.
sam_checkpoint = 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth'
model = dict(
    neck=dict(
        _delete_=True,
        type='ESCNeck',               # embed_dim, prompt_channel: from the backbone and vocabulary
        num_blocks=4,                 # N ESC blocks (paper §4.3)
        hidden_dim=256,               # VLF width = SAM dim (parameter budget, docs/escnet.md)
        sam_dim=256,
        use_sam=True,                 # False: Table 2 (a)
        sam_init='pretrained',        # 'random': Table 2 (b)
        sam_checkpoint=sam_checkpoint,
        sam_layer_map='mod',          # ESC block k <- SAM decoder layer k mod 2
        ppg=dict(
            num_regions=5,            # N_o (paper §4.3)
            threshold=0.5,            # alpha
            temperature=0.72,         # with alpha 0.5: foreground at half the map's range
            smooth=3,                 # 3 x 3 binomial blur before the normalisation
            normalize='minmax',       # calibrated: tools/analysis/ppg_calibration.py
            use_points=True,          # Table 3 (d): points + masks
            use_boxes=False,
            use_masks=True),
        num_heads=4,
        appearance_guidance_dim=256,
        text_guidance_dim=256,
        pooling_size=(2, 2),
        test_pooling_size=(1, 1),
        feature_resolution=(24, 24),
        window_size=12,
        pad_len=256,
        embed_kernel_size=1,          # paper: 1x1 (CAT-Seg: 7x7)
        prompt_source='refined',      # block k > 1 prompts from the refined correlation (Fig. 2)
        class_chunk_size=None),       # e.g. 64 to bound memory with large vocabularies
    # §3.6: CAT-Seg's U-Net decoder with bilinear upsampling, on the 256-wide cost volume
    decode_head=dict(type='CATSegHead', hidden_dim=256, upsample_mode='bilinear',
                     num_classes=171))
