# SED's zero-shot evaluation protocol (xb534/SED, eval.sh, sed_model.py): the benchmark pipeline's
# resize (short side 640, long side <= 2560), then the whole image squashed to 768 x 768 by the
# segmentor, class-attention pooling 1 x 1, probabilities from 192 x 192 resized to the original
# size in one step.
# CER with K = 8 is the "fast" setting of the official README (TEST.FAST_INFERENCE True TEST.TOPK 8).
sed_test_cfg = dict(mode='whole', resize_probabilities=True,
                    class_filter=dict(type='sed_cer', k=8))
