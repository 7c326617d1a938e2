"""One vocabulary policy: the same image and vocabulary give the same logits through the
inferencer (and so the demos and the ONNX export, which use it) and through the test loop."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import mmseg_escnet  # noqa: F401
from mmseg_escnet.apis import OpenVocabInferencer

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: Synonyms make the policy matter: 'first' prompts 'sky', 'all' averages 'sky' and 'heaven'.
VOCABULARY = ['sky, heaven', 'grass', 'sand, beach', 'snow', 'brick']
MODELS_TINY = ('catseg', 'escnet', 'sed', 'lmseg')


def _config(name: str, data_root: str) -> Config:
    cfg = Config.fromfile(osp.join(ROOT, 'configs', f'{name}_tiny_synthetic.py'))
    cfg.test_dataloader.dataset.update(data_root=data_root, splits=dict(train=1, val=1))
    return cfg


@pytest.mark.parametrize('name', MODELS_TINY)
def test_inferencer_and_test_loop_give_the_same_logits(name, tmp_path):
    cfg = _config(name, str(tmp_path / 'data'))
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    checkpoint = str(tmp_path / 'model.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(note='random')), checkpoint)

    # the test loop: the config's test vocabulary set to the list, one test_step on its dataset
    cfg.model.test_vocabulary = VOCABULARY
    loop_model = MODELS.build(cfg.model)
    loop_model.load_state_dict(model.state_dict())
    loop_model.eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    with torch.no_grad():
        [loop] = loop_model.test_step(pseudo_collate([dataset[0]]))

    # the inferencer, given the same list
    inferencer = OpenVocabInferencer(_config(name, str(tmp_path / 'data')), weights=checkpoint,
                                     vocabulary=VOCABULARY, device='cpu')
    assert inferencer.vocabulary.synonyms == loop_model.test_text.vocabulary.synonyms
    assert inferencer.vocabulary.templates == loop_model.test_text.vocabulary.templates
    result = inferencer(dataset[0]['data_samples'].img_path, return_datasamples=True)
    ours = result['predictions'] if isinstance(result, dict) else result
    ours = ours[0] if isinstance(ours, list) else ours
    torch.testing.assert_close(ours.seg_logits.data, loop.seg_logits.data, atol=1e-5, rtol=1e-5)


def test_overrides_are_named_alike_and_win(tmp_path):
    """``synonyms`` / ``templates`` given to the inferencer override the model's policy; not given,
    the model's (training) policy applies, as for the segmentor's own test vocabulary."""
    cfg = _config('catseg', str(tmp_path / 'data'))
    default = OpenVocabInferencer(cfg, device='cpu', vocabulary=VOCABULARY)
    trained = default.model.train_text.vocabulary
    assert default.vocabulary_options() == dict(synonyms=trained.synonym_policy,
                                                templates=trained.templates)
    assert default.vocabulary.synonyms[0] == ['sky']  # CAT-Seg trains with synonyms='first'
    both = OpenVocabInferencer(cfg, device='cpu', vocabulary=VOCABULARY, synonyms='all',
                               templates=['a photo of a {}.'])
    assert both.vocabulary.synonyms[0] == ['sky', 'heaven']
    assert both.vocabulary.templates == ['a photo of a {}.']
    both.set_vocabulary(dict(classes=['cat, kitty'], synonyms='first'))  # the dict's own wins
    assert both.vocabulary.synonyms == [['cat']]
