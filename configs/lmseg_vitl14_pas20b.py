# LMSeg ViT-L/14 trained on COCO-Stuff-171, zero-shot on PASCAL VOC-20b: CAT-Seg's protocol with top-32
# category filtering. Needs data/descriptions/voc20b.json (docs/lmseg.md).
#   python tools/test.py configs/lmseg_vitl14_pas20b.py CHECKPOINT
_base_ = ['./lmseg_vitl14.py', './_base_/benchmarks/pas20b.py', './_base_/benchmarks/lmseg_protocol.py']
model = dict(test_vocabulary=_base_.lmseg_test_vocabularies.pas20b, test_cfg=_base_.lmseg_test_cfg)
test_dataloader = _base_.benchmark.dataloader
test_evaluator = _base_.benchmark.evaluator
