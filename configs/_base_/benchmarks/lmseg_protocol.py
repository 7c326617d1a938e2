# LMSeg's evaluation: CAT-Seg's protocol (the paper compares with CAT-Seg under it) with the
# category filtering of LMSeg's revised version: only the 32 classes of highest cosine
# similarity go past the cost volume (docs/lmseg.md). Off: --cfg-options
# model.test_cfg.class_filter=None
lmseg_test_cfg = dict(mode='sliding_global', kernel=384, overlap=0.333, out_size=(640, 640),
                      class_filter=dict(type='topk', k=32))
# Each benchmark's descriptions are written by your LLM into data/descriptions/<vocabulary>.json:
#   python tools/generate_descriptions.py --vocab ade150 --out data/descriptions/ade150.json \
#       --model gpt-4o
lmseg_descriptions = dict(type='descriptions', reduce='mean',
                          class_name_template='A photo of a {} in the scene')
lmseg_test_vocabularies = {
    benchmark: dict(_delete_=True, classes=vocabulary,
                    templates=dict(**lmseg_descriptions,
                                   file=f'data/descriptions/{vocabulary}.json'))
    for benchmark, vocabulary in [('a847', 'ade847'), ('pc459', 'pc459'), ('a150', 'ade150'),
                                  ('pc59', 'pc59'), ('pas20', 'voc20'), ('pas20b', 'voc20b')]
}
