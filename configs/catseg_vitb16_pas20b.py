# CAT-Seg ViT-B/16 trained on COCO-Stuff-171, zero-shot on PASCAL-VOC-20b (Table 1), CAT-Seg's protocol.
#   python tools/test.py configs/catseg_vitb16_pas20b.py CHECKPOINT
_base_ = ['./catseg_vitb16.py', './_base_/benchmarks/pas20b.py']
model = dict(test_vocabulary=_base_.benchmark.vocabulary, test_cfg=_base_.benchmark.test_cfg)
test_dataloader = _base_.benchmark.dataloader
test_evaluator = _base_.benchmark.evaluator
