# LMSeg ViT-L/14 trained on COCO-Stuff-171, zero-shot on PASCAL-Context-459: CAT-Seg's protocol with top-32
# category filtering. Needs data/descriptions/pc459.json (docs/lmseg.md).
#   python tools/test.py configs/lmseg_vitl14_pc459.py CHECKPOINT
_base_ = ['./lmseg_vitl14.py', './_base_/benchmarks/pc459.py', './_base_/benchmarks/lmseg_protocol.py']
model = dict(test_vocabulary=_base_.lmseg_test_vocabularies.pc459, test_cfg=_base_.lmseg_test_cfg)
test_dataloader = _base_.benchmark.dataloader
test_evaluator = _base_.benchmark.evaluator
