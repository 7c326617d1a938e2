"""OpenVocabInferencer on tiny randomly initialised CAT-Seg / ESC-Net models; palette, legend."""
import hashlib
import importlib
import os
import os.path as osp
import tracemalloc
import warnings

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg_escnet.apis import OpenVocabInferencer
from mmseg_escnet.apis.image_io import resize_label_map, shrink_to_max_side
from mmseg_escnet.apis.outputs import OutputNamer, write_overlay
from mmseg_escnet.text import Vocabulary
from mmseg_escnet.visualization import (colorize, draw_legend, legend_entries, make_palette,
                                        overlay, render_segmentation)

overlay_module = importlib.import_module('mmseg_escnet.visualization.overlay')  # not the function

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CATSEG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
ESCNET = osp.join(ROOT, 'configs', 'escnet_tiny_synthetic.py')
CLASSES = ['sky', 'grass', 'sand', 'snow', 'brick']


def _build(model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return OpenVocabInferencer(model, device=kwargs.pop('device', 'cpu'), **kwargs)


@pytest.fixture(scope='module')
def inferencer():
    """A tiny random CAT-Seg; tests set the vocabulary and max_side they need."""
    return _build(CATSEG)


@pytest.fixture
def catseg(inferencer):
    inferencer.set_vocabulary(CLASSES)
    inferencer.max_side = 1024
    return inferencer


@pytest.fixture(scope='module')
def checkpoint(inferencer, tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    torch.save(dict(state_dict=inferencer.model.state_dict(), meta=dict(note='random')), path)
    return str(path)


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _predict(inferencer, image, **kwargs):
    return inferencer(image, return_probabilities=True, **kwargs)['predictions']


# -- results ------------------------------------------------------------------------------------
@pytest.mark.parametrize('size', [(1, 1), (7, 5), (96, 96), (50, 130)])
def test_result_at_original_size(catseg, size):
    pred = _predict(catseg, _image(*size))
    assert pred['sem_seg'].shape == size and pred['sem_seg'].dtype == np.int32  # documented
    assert pred['classes'] == CLASSES and pred['img_path'] is None
    assert pred['probabilities'].shape == (5, *size)
    np.testing.assert_array_equal(pred['sem_seg'], pred['probabilities'].argmax(0))


def test_scores_match_probabilities_and_logits(catseg):
    image = _image(40, 60, seed=3)
    pred = _predict(catseg, image)
    labels, probs = pred['sem_seg'], pred['probabilities']
    present = np.unique(labels)
    assert sorted(s['index'] for s in pred['scores']) == present.tolist()
    fractions = [s['fraction'] for s in pred['scores']]
    assert fractions == sorted(fractions, reverse=True)
    assert sum(fractions) == pytest.approx(1.0)
    for score in pred['scores']:
        mask = labels == score['index']
        assert score['name'] == CLASSES[score['index']]
        assert score['fraction'] == pytest.approx(mask.mean())
        assert score['mean_probability'] == pytest.approx(probs[score['index']][mask].mean(),
                                                          rel=1e-5)
    np.testing.assert_allclose(pred['max_probabilities'], probs.reshape(5, -1).max(1))
    # 'whole' mode: probabilities are the sigmoid of the model's logits
    sample = catseg(image, return_datasamples=True)
    np.testing.assert_allclose(probs, sample.seg_logits.data.sigmoid().numpy(), rtol=1e-6)
    assert sample.pred_sem_seg.data.dtype == torch.int32
    np.testing.assert_array_equal(sample.pred_sem_seg.data[0].numpy(), labels)


def test_a_class_filter_gives_class_sparse_outputs(catseg):
    """With ``topk`` k = 2, only 2 classes have probabilities; the others are reported as 0."""
    image = _image(40, 60, seed=3)
    settings = catseg.model.inference_settings
    catseg.model.set_inference_settings(settings.replace(class_filter=dict(type='topk', k=2)))
    try:
        pred = _predict(catseg, image)
        sample = catseg(image, return_datasamples=True)
    finally:
        catseg.model.set_inference_settings(settings)
    kept = sample.metainfo['seg_logits_classes'].tolist()
    assert len(kept) == 2 and sample.seg_logits.shape == (40, 60)
    assert sample.seg_logits.data.shape[0] == 2
    dropped = sorted(set(range(5)) - set(kept))
    probs = pred['probabilities']                                           # (5, 40, 60)
    assert (probs[dropped] == 0).all() and (probs[kept] > 0).all()
    np.testing.assert_allclose(probs[kept], sample.seg_logits.data.sigmoid().numpy(), rtol=1e-6)
    np.testing.assert_allclose(pred['max_probabilities'], probs.reshape(5, -1).max(1))
    np.testing.assert_array_equal(pred['sem_seg'], probs.argmax(0))
    assert {s['index'] for s in pred['scores']} <= set(kept)
    for score in pred['scores']:
        mask = pred['sem_seg'] == score['index']
        assert score['mean_probability'] == pytest.approx(probs[score['index']][mask].mean(),
                                                          rel=1e-5)


def test_large_image_is_shrunk_then_label_map_enlarged(catseg):
    catseg.max_side = 64
    big = cv2.resize(_image(30, 20, seed=4), (2000, 3000), interpolation=cv2.INTER_NEAREST)
    pred = _predict(catseg, big)
    assert pred['sem_seg'].shape == (3000, 2000)
    assert pred['probabilities'].shape == (5, 64, 43)
    small = _predict(catseg, shrink_to_max_side(big, 64))
    np.testing.assert_allclose(pred['probabilities'], small['probabilities'], atol=1e-6)
    np.testing.assert_array_equal(pred['sem_seg'], resize_label_map(small['sem_seg'],
                                                                    (3000, 2000)))
    assert {s['index'] for s in pred['scores']} == set(np.unique(small['sem_seg']).tolist())
    sample = catseg(big, return_datasamples=True)
    assert sample.pred_sem_seg.shape == (3000, 2000) and sample.seg_logits.shape == (64, 43)


def test_single_class_vocabulary(catseg):
    catseg.set_vocabulary(['cat'])
    pred = _predict(catseg, _image(10, 12))
    assert (pred['sem_seg'] == 0).all() and pred['probabilities'].shape == (1, 10, 12)
    assert pred['scores'][0]['fraction'] == 1.0
    assert 0.0 < pred['probabilities'].min() and pred['probabilities'].max() < 1.0


# -- inputs --------------------------------------------------------------------------------------
def test_grayscale_rgba_16bit_and_float_match_8bit(catseg, tmp_path):
    gray = _image(24, 32, seed=5)[:, :, 0]
    bgr = np.repeat(gray[:, :, None], 3, axis=2)
    reference = _predict(catseg, bgr)
    color = _image(24, 32, seed=6)
    alpha = np.full((24, 32, 1), 128, dtype=np.uint8)
    reference_color = _predict(catseg, color)
    cv2.imwrite(str(tmp_path / 'rgba.png'), np.concatenate([color, alpha], axis=2))
    cv2.imwrite(str(tmp_path / 'deep.png'), color.astype(np.uint16) * 257)
    cases = [(gray, reference), (gray[:, :, None], reference),
             (np.concatenate([color, alpha], axis=2), reference_color),
             (color.astype(np.uint16) * 257, reference_color), (color / 255.0, reference_color),
             (str(tmp_path / 'rgba.png'), reference_color),
             (str(tmp_path / 'deep.png'), reference_color)]
    for given, expected in cases:
        pred = _predict(catseg, given)
        np.testing.assert_array_equal(pred['sem_seg'], expected['sem_seg'])
        np.testing.assert_allclose(pred['probabilities'], expected['probabilities'], atol=1e-6)


def test_arrays_are_bgr_like_files(catseg, tmp_path):
    bgr = _image(20, 28, seed=7)
    cv2.imwrite(str(tmp_path / 'x.png'), bgr)
    from_file = _predict(catseg, str(tmp_path / 'x.png'))
    from_array = _predict(catseg, bgr)
    np.testing.assert_allclose(from_file['probabilities'], from_array['probabilities'], atol=1e-6)
    assert from_file['img_path'] == str(tmp_path / 'x.png')
    swapped = _predict(catseg, np.ascontiguousarray(bgr[:, :, ::-1]))  # RGB given as BGR
    assert not np.allclose(swapped['probabilities'], from_array['probabilities'], atol=1e-4)


def test_folder_input_sorted_with_outputs(catseg, tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    for name, size in (('b.png', (12, 9)), ('a.jpg', (8, 8)), ('c.PNG', (5, 11))):
        cv2.imwrite(str(folder / name), _image(*size))
    (folder / 'notes.txt').write_text('not an image')
    out = tmp_path / 'out'
    result = catseg(str(folder), out_dir=str(out), batch_size=2)
    preds = result['predictions']
    assert [osp.basename(p['img_path']) for p in preds] == ['a.jpg', 'b.png', 'c.PNG']
    assert [p['sem_seg'].shape for p in preds] == [(8, 8), (12, 9), (5, 11)]
    for pred, stem in zip(preds, 'abc'):
        saved = cv2.imread(str(out / 'pred' / f'{stem}.png'), cv2.IMREAD_UNCHANGED)
        assert saved.dtype == np.uint8
        np.testing.assert_array_equal(saved, pred['sem_seg'])
        assert (out / 'vis' / f'{stem}.png').is_file()
    single = _predict(catseg, str(folder / 'b.png'))  # batching (mixed sizes) changes nothing
    np.testing.assert_array_equal(single['sem_seg'], preds[1]['sem_seg'])


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode('.png', image)
    assert ok
    path.write_bytes(data.tobytes())  # no suffix needed: files are decoded by content
    return str(path)


def test_same_file_names_get_numbered_outputs(catseg, tmp_path):
    # different sizes: an overwritten output would not match its image's prediction
    files = [_write(tmp_path / f'd{i}' / name, _image(5 + i, 7 + i, seed=20 + i))
             for i, name in enumerate(['a.png', 'a.png', 'a.png', 'a', 'a_1.png'])]
    array = _image(4, 6, seed=30)
    start = catseg.num_pred_imgs  # arrays are numbered like mmseg's, over the inferencer's life
    out = tmp_path / 'out'
    result = catseg(files + [array], out_dir=str(out), return_vis=True, batch_size=2)
    names = ['a.png', 'a_1.png', 'a_2.png', 'a_3.png', 'a_1_1.png']
    vis_names = names + [f'{start + 5:08d}_vis.png']
    pred_names = names + [f'{start + 5:08d}_pred.png']
    assert sorted(os.listdir(out / 'vis')) == sorted(vis_names)
    assert sorted(os.listdir(out / 'pred')) == sorted(pred_names)
    for pred, canvas, vis_name, pred_name in zip(result['predictions'], result['visualization'],
                                                 vis_names, pred_names):
        saved = cv2.imread(str(out / 'pred' / pred_name), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(saved, pred['sem_seg'])
        np.testing.assert_array_equal(cv2.imread(str(out / 'vis' / vis_name))[:, :, ::-1], canvas)


def test_output_namer_never_reuses_a_name():
    namer = OutputNamer()
    assert namer.assign('x/00000001_vis.png', 0) == dict(vis='00000001_vis.png',
                                                         pred='00000001_vis.png')
    # an array's name taken by a file in one folder: the counter moves on in both folders
    assert namer.assign(None, 1) == dict(vis='00000001_vis_1.png', pred='00000001_pred_1.png')
    assert namer.assign('y/B.jpg', 2) == dict(vis='B.png', pred='B.png')
    assert namer.assign('z/b.png', 3) == dict(vis='b_1.png', pred='b_1.png')  # case-insensitive
    assert OutputNamer().assign('z/b.png', 3) == dict(vis='b.png', pred='b.png')  # per call


def test_write_overlay_round_trip_keeps_the_canvas(tmp_path):
    canvas = _image(6, 9, seed=33)  # RGB
    original = canvas.copy()
    path = write_overlay(str(tmp_path / 'sub' / 'é.png'), canvas)
    np.testing.assert_array_equal(canvas, original)  # channels swapped back after encoding
    np.testing.assert_array_equal(cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR),
                                  original[:, :, ::-1])  # BGR on disk
    frozen = original.copy()
    frozen.flags.writeable = False
    write_overlay(str(tmp_path / 'frozen.png'), frozen)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'frozen.png'))[:, :, ::-1], original)
    write_overlay(str(tmp_path / 'x.jpg'), canvas)  # any image format
    assert cv2.imread(str(tmp_path / 'x.jpg')).shape == (6, 9, 3)
    with pytest.raises(ValueError, match=r'x.txt: an overlay is written as one of .png, .jpg'):
        write_overlay(str(tmp_path / 'x.txt'), canvas)
    with pytest.raises(ValueError, match=r'must be \(H, W, 3\) uint8 RGB, got shape \(6, 9\)'):
        write_overlay(str(tmp_path / 'x.png'), canvas[:, :, 0])


def test_datasamples_mode_writes_label_maps_too(catseg, tmp_path):
    path = _write(tmp_path / 'in' / 'photo.jpg', _image(9, 11, seed=31))
    sample = catseg(path, return_datasamples=True, out_dir=str(tmp_path / 'out'))
    saved = cv2.imread(str(tmp_path / 'out' / 'pred' / 'photo.png'), cv2.IMREAD_UNCHANGED)
    assert saved.shape == (9, 11)
    np.testing.assert_array_equal(saved, sample.pred_sem_seg.data[0].numpy())
    assert (tmp_path / 'out' / 'vis' / 'photo.png').is_file()
    samples = catseg([path, path], return_datasamples=True, out_dir=str(tmp_path / 'two'))
    assert len(samples) == 2 and sorted(os.listdir(tmp_path / 'two' / 'pred')) == [
        'photo.png', 'photo_1.png']


def test_input_errors(catseg, tmp_path):
    (tmp_path / 'bad.jpg').write_bytes(b'no image here')
    (tmp_path / 'empty').mkdir()
    cases = [
        (str(tmp_path / 'missing.png'), FileNotFoundError, 'image file .*missing.png not found'),
        (str(tmp_path / 'bad.jpg'), ValueError, 'cannot decode image file .*bad.jpg'),
        (str(tmp_path / 'empty'), FileNotFoundError, 'holds no image file'),
        (np.zeros((4, 4, 3), dtype=bool), ValueError, 'input 0: unsupported dtype bool'),
        ([_image(4, 4), np.zeros((4, 4, 2), np.uint8)], ValueError,
         r'input 1: .*got shape \(4, 4, 2\)'),
        ([_image(4, 4), 3], TypeError, 'input 1: expected an image path or a numpy array'),
        ([], ValueError, 'no input images'),
    ]
    for given, error, message in cases:
        with pytest.raises(error, match=message):
            catseg(given)
    with pytest.raises(ValueError, match='batch_size must be >= 1'):
        catseg(_image(4, 4), batch_size=0)


def test_image_files_above_max_pixels_are_refused_before_decoding(catseg, tmp_path, monkeypatch):
    path = tmp_path / 'big.png'
    cv2.imwrite(str(path), _image(30, 40))
    monkeypatch.setattr(catseg, 'max_pixels', 1199)
    with pytest.raises(ValueError, match=r'image file .*big.png is 40 x 30 = 1,200 pixels, more '
                       'than the limit of 1,199 pixels'):
        catseg(str(path))
    monkeypatch.setattr(catseg, 'max_pixels', 1200)
    assert catseg(str(path))['predictions']['sem_seg'].shape == (30, 40)
    with pytest.raises(ValueError, match=r'max_pixels must be a positive int or None \(no limit\), '
                       'got 0'):
        _build(CATSEG, max_pixels=0)


def test_dark_16bit_input_warns(catseg):
    twelve_bit = (_image(6, 8, seed=32).astype(np.uint16) * 16)  # 12-bit data, max < 4096
    with pytest.warns(UserWarning, match='input 0: 16-bit image with maximum value .* < 4096 .*'
                      'dark after scaling .*pass an 8-bit array'):
        pred = _predict(catseg, twelve_bit)
    assert pred['sem_seg'].shape == (6, 8)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the error raised without CUDA')
def test_cuda_without_cuda_is_a_clear_error():
    for device in ('cuda', 'cuda:1'):
        with pytest.raises(ValueError, match=f"device '{device}': CUDA is not available .*use "
                           'device cpu'):
            OpenVocabInferencer(CATSEG, device=device)
    with pytest.raises(ValueError, match="device 'gpu' is not a torch device"):
        OpenVocabInferencer(CATSEG, device='gpu')


# -- vocabulary ----------------------------------------------------------------------------------
def test_vocabulary_switching_and_permutation(catseg, tmp_path):
    image = _image(16, 20, seed=8)
    base = _predict(catseg, image)
    order = [3, 0, 4, 1, 2]
    catseg.set_vocabulary([CLASSES[i] for i in order])
    permuted = _predict(catseg, image)
    assert permuted['classes'] == [CLASSES[i] for i in order]
    np.testing.assert_allclose(permuted['probabilities'], base['probabilities'][order],
                               atol=1e-5)
    np.testing.assert_allclose(permuted['max_probabilities'], base['max_probabilities'][order],
                               atol=1e-5)
    np.testing.assert_array_equal(np.array(order)[permuted['sem_seg']], base['sem_seg'])

    vocab_file = tmp_path / 'classes.txt'
    vocab_file.write_text('# my classes\ncat, kitty\n\ndog\nsky\n')
    catseg.set_vocabulary(str(vocab_file))
    assert catseg.classes == ['cat', 'dog', 'sky']
    assert catseg.vocabulary.synonyms[0] == ['cat']  # the model's policy: CAT-Seg's 'first'
    assert catseg.vocabulary.all_synonyms[0] == ['cat', 'kitty']
    assert _predict(catseg, image)['probabilities'].shape == (3, 16, 20)
    catseg.set_vocabulary('voc20')
    assert len(catseg.classes) == 20 and catseg.model.dataset_meta['classes'] == catseg.classes
    assert len(catseg.model.dataset_meta['palette']) == 20
    assert _predict(catseg, image)['probabilities'].shape == (20, 16, 20)
    given = Vocabulary(['a', 'b'], synonyms='first', templates=['a photo of {}'])
    assert catseg.set_vocabulary(given) is given and catseg.vocabulary is given


def test_bad_vocabularies_are_refused_and_keep_the_old_one(catseg, tmp_path):
    (tmp_path / 'none.txt').write_text('# only a comment\n\n')
    cases = [([], 'vocabulary <list> is empty'), ('', 'the vocabulary is empty'),
             ('  ', 'the vocabulary is empty'),
             (str(tmp_path / 'none.txt'), 'vocabulary .*none.txt is empty'),
             (str(tmp_path / 'missing.txt'), 'vocabulary file not found: .*missing.txt'),
             ('no_such_vocabulary', "unknown built-in vocabulary 'no_such_vocabulary'"),
             (['cat', 'Cat'], 'duplicate class 1'), (['cat', ' '], 'class 1 .* empty name')]
    for given, message in cases:
        with pytest.raises(ValueError, match=message):
            catseg.set_vocabulary(given)
        assert catseg.classes == CLASSES
    with pytest.raises(ValueError, match='vocabulary <list> is empty'):
        _build(CATSEG, vocabulary=[])


# -- models and weights --------------------------------------------------------------------------
def test_weights_are_loaded_strictly(catseg, checkpoint, tmp_path):
    image = _image(12, 12, seed=9)
    loaded = _build(CATSEG, weights=checkpoint, vocabulary=CLASSES)
    np.testing.assert_allclose(_predict(loaded, image)['probabilities'],
                               _predict(catseg, image)['probabilities'], atol=1e-6)
    # the same weights as safetensors (tools/publish_model.py OUT.safetensors, the Hub folder)
    from mmseg_escnet.checkpoints.safetensors_io import save_safetensors_checkpoint
    save_safetensors_checkpoint(torch.load(checkpoint), str(tmp_path / 'tiny.safetensors'))
    from_safetensors = _build(CATSEG, weights=str(tmp_path / 'tiny.safetensors'),
                              vocabulary=CLASSES)
    np.testing.assert_array_equal(_predict(from_safetensors, image)['probabilities'],
                                  _predict(loaded, image)['probabilities'])
    state = torch.load(checkpoint)['state_dict']
    state.pop(next(iter(state)))
    torch.save(state, tmp_path / 'partial.pth')
    with pytest.raises(ValueError, match=r'checkpoint .*partial.pth does not fit the model of '
                       r'.*catseg_tiny_synthetic.py: 1 weight of the model not in the file '
                       r'\(backbone.clip_model.positional_embedding\)'):
        _build(CATSEG, weights=str(tmp_path / 'partial.pth'))
    with pytest.raises(FileNotFoundError, match='checkpoint file not found: .*nope.pth'):
        _build(CATSEG, weights=str(tmp_path / 'nope.pth'))


def test_published_model_folder(checkpoint, catseg, tmp_path, monkeypatch):
    """A folder as tools/publish_model.py --hub-folder writes it (and `hf download` fetches it):
    config.py and one weights file; a path with a separator, so a bare name stays a zoo name."""
    from mmseg_escnet.checkpoints.safetensors_io import save_safetensors_checkpoint
    folder = tmp_path / 'hub' / 'my_model'
    folder.mkdir(parents=True)
    Config.fromfile(CATSEG).dump(str(folder / 'config.py'))  # flattened, as the Runner's meta
    save_safetensors_checkpoint(torch.load(checkpoint),
                                str(folder / 'my_model-0a1b2c3d.safetensors'))
    (folder / 'README.md').write_text('a model card')
    image = _image(12, 12, seed=11)
    from_folder = _build(str(folder) + os.sep, vocabulary=CLASSES)
    np.testing.assert_allclose(_predict(from_folder, image)['probabilities'],
                               _predict(catseg, image)['probabilities'], atol=1e-6)
    monkeypatch.chdir(tmp_path / 'hub')
    with pytest.raises(ValueError, match=r"a folder 'my_model' exists: write \./my_model"):
        _build('my_model')  # a bare name is a model-zoo name
    (folder / 'older-00000000.safetensors').write_bytes(b'')
    with pytest.raises(ValueError, match=r'expected one weights file .*found '
                       r'my_model-0a1b2c3d.safetensors, older-00000000.safetensors'):
        _build('./my_model')
    (folder / 'config.py').unlink()
    with pytest.raises(FileNotFoundError, match='a model folder holds config.py'):
        _build('./my_model')


def test_model_zoo_name(checkpoint, catseg, tmp_path, monkeypatch):
    digest = hashlib.sha256(open(checkpoint, 'rb').read()).hexdigest()
    (tmp_path / 'model-index.yml').write_text('Import:\n  - tiny/metafile.yaml\n')
    (tmp_path / 'tiny').mkdir()
    (tmp_path / 'tiny' / 'metafile.yaml').write_text(
        'Models:\n  - Name: tiny_catseg\n    In Collection: CAT-Seg\n'
        f'    Config: {CATSEG}\n    Weights: file://{checkpoint}\n'
        f'    Weights SHA-256: {digest}\n')
    monkeypatch.setenv('MMSEG_ESCNET_MODEL_INDEX', str(tmp_path / 'model-index.yml'))
    monkeypatch.setenv('MMSEG_ESCNET_CACHE', str(tmp_path / 'cache'))
    monkeypatch.chdir(tmp_path)
    for name in ('tiny_catseg', 'tiny_catsge'):  # files named like models do not shadow them
        (tmp_path / name).write_text('not a config')
    zoo = _build('tiny_catseg', vocabulary=CLASSES, device=None)  # device=None: CUDA else CPU
    expected = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert next(zoo.model.parameters()).device.type == expected
    image = _image(12, 12, seed=10)
    np.testing.assert_allclose(_predict(zoo, image)['probabilities'],
                               _predict(catseg, image)['probabilities'], atol=1e-5)
    with pytest.raises(ValueError, match=r"'tiny_catsge' is not a config file \(a path ending in "
                       r"\.py/\.yml/\.yaml/\.json\), not a model folder and not a known "
                       r"model-zoo name: .*tiny_catseg"):
        _build('tiny_catsge')
    for missing in ('nope.py', 'nope.yaml', 'nope.YML', 'nope.json'):
        with pytest.raises(FileNotFoundError, match=f'config file not found: .*{missing}'):
            _build(str(tmp_path / missing))
    with pytest.raises(ValueError, match='max_side must be a positive int or None, got 0'):
        _build(CATSEG, max_side=0)


def test_sliding_global_probabilities_are_not_squashed_twice():
    cfg = Config.fromfile(CATSEG)
    cfg.model.test_cfg = dict(mode='sliding_global', kernel=96, overlap=0.333,
                              out_size=(160, 160))
    with pytest.warns(UserWarning, match='no weights given, the model is randomly initialised'):
        model = OpenVocabInferencer(cfg, device='cpu')
    image = _image(30, 40, seed=11)
    sample = model(image, return_datasamples=True)
    pred = _predict(model, image)
    # the segmentor returns the logit of the averaged probabilities: one sigmoid gives them back
    np.testing.assert_allclose(pred['probabilities'], sample.seg_logits.data.sigmoid().numpy(),
                               rtol=1e-6)
    assert pred['sem_seg'].shape == (30, 40)


def test_escnet_tiny():
    model = _build(ESCNET, vocabulary=['cat', 'dog, puppy', 'sky'])
    pred = _predict(model, _image(33, 17, seed=12))
    assert pred['sem_seg'].shape == (33, 17) and pred['probabilities'].shape == (3, 33, 17)
    assert pred['classes'] == ['cat', 'dog', 'sky']


# -- palette, overlay, legend --------------------------------------------------------------------
@pytest.mark.parametrize('num_classes', [1, 5, 847, 5000])
def test_palette_distinct_deterministic_no_grey(num_classes):
    palette = make_palette(num_classes)
    assert palette.shape == (num_classes, 3) and palette.dtype == np.uint8
    assert len({tuple(c) for c in palette}) == num_classes
    np.testing.assert_array_equal(palette, make_palette(num_classes))
    np.testing.assert_array_equal(palette[:1], make_palette(1))  # row i does not depend on T
    assert not ((palette[:, 0] == palette[:, 1]) & (palette[:, 1] == palette[:, 2])).any()
    with pytest.raises(ValueError, match='num_classes must be an int in'):
        make_palette(0)


def test_overlay_and_legend_entries():
    labels = np.array([[0, 0, 2], [0, 2, 2], [3, 3, 3]])
    names = ['a', 'b', 'c', 'd']
    palette = make_palette(4)
    image = np.full((3, 3, 3), 100, dtype=np.uint8)
    np.testing.assert_array_equal(overlay(image, labels, palette, 1.0), palette[labels])
    np.testing.assert_array_equal(overlay(image, labels, palette, 0.0), image)
    half = np.rint(0.5 * 100 + 0.5 * palette[labels].astype(float)).astype(np.uint8)
    np.testing.assert_array_equal(overlay(image, labels, palette, 0.5), half)
    entries = legend_entries(labels, names, palette)
    assert [(e.index, e.name) for e in entries] == [(0, 'a'), (2, 'c'), (3, 'd')]  # ties: id
    assert [e.fraction for e in entries] == [3 / 9, 3 / 9, 3 / 9]
    assert [e.color for e in entries] == [tuple(palette[i]) for i in (0, 2, 3)]
    with pytest.raises(ValueError, match=r'ids in \[1, 4\], but the palette has 4 colours'):
        overlay(image, labels + 1, palette)
    with pytest.raises(ValueError, match='opacity must be in'):
        overlay(image, labels, palette, 1.5)
    with pytest.raises(ValueError, match='does not match image shape'):
        overlay(image[:2], labels, palette)
    panel = draw_legend(entries, row_height=20)
    assert panel.shape[0] == 3 * 20 + 2 * 4


@pytest.mark.parametrize('band_pixels', [1, 7, 1 << 18])
def test_overlay_in_bands_matches_the_formula(band_pixels, monkeypatch):
    monkeypatch.setattr(overlay_module, 'BAND_PIXELS', band_pixels)  # 1: a row per band
    rng = np.random.default_rng(14)
    image = rng.integers(0, 256, (23, 17, 3), dtype=np.uint8)
    labels = rng.integers(0, 6, (23, 17)).astype(np.int32)
    palette = make_palette(6)
    np.testing.assert_array_equal(colorize(labels, palette), palette[labels])
    np.testing.assert_array_equal(overlay_module.class_pixel_counts(labels, 6),
                                  np.bincount(labels.ravel(), minlength=6))
    for opacity in (0.0, 0.1, 0.3, 0.5, 0.7, 1.0):
        expected = np.rint((1.0 - opacity) * image.astype(np.float32)
                           + opacity * palette[labels].astype(np.float32)).astype(np.uint8)
        np.testing.assert_array_equal(overlay(image, labels, palette, opacity), expected)
        canvas, _ = render_segmentation(image, labels, [str(i) for i in range(6)], palette,
                                        opacity)
        np.testing.assert_array_equal(canvas[:23, :17], expected)
    with pytest.raises(ValueError, match=r'holds class id 6, expected ids in \[0, 6\)'):
        overlay_module.class_pixel_counts(labels + 1, 6)


def test_rendering_a_large_image_needs_little_extra_memory(monkeypatch):
    monkeypatch.setattr(overlay_module, 'BAND_PIXELS', 1 << 15)
    height, width = 1200, 1500  # 55 bands
    image = np.random.default_rng(15).integers(0, 256, (height, width, 3), dtype=np.uint8)
    labels = (np.arange(height * width, dtype=np.int32).reshape(height, width) // 70001) % 5
    tracemalloc.start()
    try:
        canvas, entries = render_segmentation(image, labels, CLASSES, make_palette(5), 0.4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Beyond the canvas: band-sized temporaries (about 30 bytes per band pixel) and the legend,
    # 1.5 MB here, whatever the image size; blending the whole image in float32 would take
    # 13x the image (70 MB).
    assert peak - canvas.nbytes < 32 * (1 << 15) + 500_000, (peak, canvas.nbytes)
    assert [e.index for e in entries] == [0, 1, 2, 3, 4]
    expected = np.rint(0.6 * image[:100].astype(np.float32)
                       + 0.4 * make_palette(5)[labels[:100]].astype(np.float32))
    np.testing.assert_array_equal(canvas[:100, :width], expected.astype(np.uint8))


def _colours(pixels):
    """Non-grey colours of an RGB array (legend text and borders are grey)."""
    flat = pixels.reshape(-1, 3)
    flat = flat[~((flat[:, 0] == flat[:, 1]) & (flat[:, 1] == flat[:, 2]))]
    return {tuple(int(v) for v in c) for c in flat}


def test_visualization_legend_lists_exactly_the_classes_present(catseg, tmp_path):
    catseg.set_vocabulary(['c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7'])
    image = _image(40, 30, seed=13)
    result = catseg(image, return_vis=True, opacity=1.0)
    labels, canvas = result['predictions']['sem_seg'], result['visualization']
    palette = catseg.palette
    np.testing.assert_array_equal(canvas[:40, :30], palette[labels])
    present = {tuple(int(v) for v in palette[i]) for i in np.unique(labels)}
    assert _colours(canvas[:, 30:]) == present  # swatches: the classes present, nothing else
    entries = render_segmentation(image[:, :, ::-1], labels, catseg.classes, palette)[1]
    assert [e.index for e in entries] == [s['index'] for s in result['predictions']['scores']]
    bare = catseg(image, return_vis=True, with_legend=False, opacity=1.0)['visualization']
    assert bare.shape == (40, 30, 3)
