# ERR-Seg's zero-shot evaluation protocol (lchen1019/ERR-Seg, eval.sh, err_seg_model.py;
# arXiv:2501.17642; docs/errseg.md), shared by every benchmark: the detectron2 test mapper's resize
# (short side 800, long side <= 1333), then the whole image squashed by the segmentor to the
# training crop (640 x 640 for ERR-Seg B; 768 x 768 for L, whose benchmark configs set
# model.clip_resolution=768 as eval.sh does), sigmoid, probabilities resized to the original size
# in one step (official: from 160 x 160 / 192 x 192). No sliding window, no test-time
# augmentation. The compact vocabulary keeps K classes per image (RRHC, SAMPLE_CLASSES_NUM set
# per benchmark by eval.sh).
# Labels go through LoadSegAnnotations (uint16-safe).
errseg_benchmark_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=800, max_size=1333),
    dict(type='LoadSegAnnotations'),
    dict(type='PackSegInputs'),
]
# K per benchmark (eval.sh). PAS-20b has no official K (eval.sh does not run it): 24, the K of
# PC-59, since its text vocabulary is the 59 classes of VOC-20 plus the 39 other PC-59 classes
# that stand in for the background.
errseg_k = dict(a847=48, pc459=48, a150=32, pc59=24, pas20=16, pas20b=24)
errseg_test_cfgs = {
    benchmark: dict(mode='whole', resize_probabilities=True, class_filter=dict(type='rrhc', k=k))
    for benchmark, k in errseg_k.items()
}
# ERR-Seg L is trained at 640 px and tested at 768 px (eval.sh: INPUT.CROP.SIZE (768, 768) for the
# L configs)
errseg_large_test_resolution = 768
