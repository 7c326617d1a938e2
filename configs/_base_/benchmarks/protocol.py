# CAT-Seg's zero-shot evaluation protocol (cvlab-kaist/CAT-Seg, eval.sh), shared by every benchmark:
# the detectron2 test mapper's resize (short side 640, long side <= 2560), then the segmentor's
# 'sliding_global' mode: squash to 640 x 640, 384 px crops at stride 256 plus a global view,
# averaged in sigmoid space, resized back to the original size.
# Labels go through LoadSegAnnotations (uint16-safe).
benchmark_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeShortestEdge', scale=640, max_size=2560),
    dict(type='LoadSegAnnotations'),
    dict(type='PackSegInputs'),
]
benchmark_test_cfg = dict(mode='sliding_global', kernel=384, overlap=0.333, out_size=(640, 640))
benchmark_loader = dict(
    _delete_=True,
    batch_size=1,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False))
