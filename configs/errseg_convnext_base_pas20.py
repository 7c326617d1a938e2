# ERR-Seg-B trained on COCO-Stuff-171, zero-shot on PASCAL-VOC-20, ERR-Seg's protocol:
# whole image squashed to 640 x 640, compact vocabulary of K = 16 classes per image
# (eval.sh).
#   python tools/test.py configs/errseg_convnext_base_pas20.py CHECKPOINT
#   every class: --cfg-options model.test_cfg.class_filter=None
_base_ = ['./errseg_convnext_base.py', './_base_/benchmarks/pas20.py',
          './_base_/benchmarks/errseg_protocol.py']
model = dict(test_vocabulary=_base_.benchmark.vocabulary, test_cfg=_base_.errseg_test_cfgs.pas20)
test_dataloader = _base_.benchmark.dataloader
test_dataloader.dataset.pipeline = _base_.errseg_benchmark_pipeline  # short side 800
test_evaluator = _base_.benchmark.evaluator
