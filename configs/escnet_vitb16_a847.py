# ESC-Net ViT-B/16 trained on COCO-Stuff-171, zero-shot on ADE20K-847 (Table 1), CAT-Seg's protocol.
#   python tools/test.py configs/escnet_vitb16_a847.py CHECKPOINT
_base_ = ['./escnet_vitb16.py', './_base_/benchmarks/a847.py']
model = dict(test_vocabulary=_base_.benchmark.vocabulary, test_cfg=_base_.benchmark.test_cfg)
test_dataloader = _base_.benchmark.dataloader
test_evaluator = _base_.benchmark.evaluator
