# SED-L trained on COCO-Stuff-171, zero-shot on ADE20K-150, SED's protocol: whole image squashed to
# 768 x 768, category early rejection with K = 8 (the official "fast" numbers).
#   python tools/test.py configs/sed_convnext_large_a150.py CHECKPOINT
#   without CER: --cfg-options model.test_cfg.class_filter=None
_base_ = ['./sed_convnext_large.py', './_base_/benchmarks/a150.py', './_base_/benchmarks/sed_protocol.py']
model = dict(test_vocabulary=_base_.benchmark.vocabulary, test_cfg=_base_.sed_test_cfg)
test_dataloader = _base_.benchmark.dataloader
test_evaluator = _base_.benchmark.evaluator
