"""tools/analysis/visualize_escnet.py on the tiny ESC-Net: the figures it writes show the prompts
the model makes (traced here independently of the tool), and its errors name the problem."""
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

import mmseg_escnet  # noqa: F401
from mmseg_escnet.apis import OpenVocabInferencer
from mmseg_escnet.apis.escnet_prompts import trace_escnet_prompts
from mmseg_escnet.datasets.synthetic_shapes import ensure_synthetic_shapes
from mmseg_escnet.utils import run_cli
from mmseg_escnet.visualization import BOX_COLOR, POINT_COLOR, draw_prompts

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
ESCNET = osp.join(ROOT, 'configs', 'escnet_tiny_synthetic.py')
CATSEG = osp.join(ROOT, 'configs', 'catseg_tiny_synthetic.py')
VOCAB = 'sky,grass,sand,snow,brick'
PANEL = 96  # the 96 px synthetic image at 1 display pixel per input pixel: 4 per grid cell


@pytest.fixture(scope='module')
def tool(load_script):
    return load_script('tools/analysis/visualize_escnet.py')


@pytest.fixture(scope='module')
def files(tmp_path_factory, random_tiny_checkpoints):
    """Random tiny ESC-Net and CAT-Seg checkpoints (MMEngine's format) and a synthetic image."""
    folder = tmp_path_factory.mktemp('visualize_escnet')
    for name in ('escnet.pth', 'catseg.pth'):
        (folder / name).symlink_to(random_tiny_checkpoints / name)
    data = ensure_synthetic_shapes(str(folder / 'data'), splits=dict(val=1))
    return folder, osp.join(data, 'img_dir', 'val', '00000.png')


def _trace(model, files, image_path):
    """The tiny ESC-Net's prompts for the image, preprocessed by hand (CLIP mean and std)."""
    folder, _ = files
    pre = Config.fromfile(ESCNET).model.data_preprocessor
    rgb = cv2.imread(image_path)[:, :, ::-1].astype(np.float32)
    x = (rgb - np.float32(pre.mean)) / np.float32(pre.std)
    return trace_escnet_prompts(model, torch.from_numpy(x.transpose(2, 0, 1).copy())[None])


def test_figures_show_the_model_prompts(tool, files, random_tiny_model, tmp_path, capsys):
    folder, image = files
    out = tmp_path / 'vis'
    result = tool.main([ESCNET, str(folder / 'escnet.pth'), image, '--vocab', VOCAB,
                        '--classes', 'grass, SKY', '--out', str(out),
                        '--panel-size', str(PANEL)])
    assert result['classes'] == [1, 0] and result['skipped'] == []
    assert result['grid'] == (24, 24) and result['panel_size'] == (PANEL, PANEL)
    names = {'fig3_1_grass.png', 'fig3_0_sky.png', 'fig6.png', 'overview.png'}
    assert set(result['files']) == names
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    canvases = {n: cv2.imread(str(out / n))[:, :, ::-1] for n in names}  # RGB
    # panels: fig3 2 blocks x 5 columns; fig6 2 classes x (image + 2 blocks); overview 2 x 5
    for name, rows, cols in (('fig3_1_grass.png', 2, 5), ('fig6.png', 2, 3),
                             ('overview.png', 2, 5)):
        canvas, offsets = canvases[name], result['layout'][name]
        assert len(offsets) == rows and all(len(r) == cols for r in offsets)
        assert canvas.shape[0] >= rows * PANEL and canvas.shape[1] >= cols * PANEL
        for top, left in (o for r in offsets for o in r):
            assert top + PANEL <= canvas.shape[0] and left + PANEL <= canvas.shape[1]
    assert 'grass (id 1): block 1:' in capsys.readouterr().out

    trace = _trace(random_tiny_model('escnet'), files, image)
    fig3, offsets = canvases['fig3_1_grass.png'], result['layout']['fig3_1_grass.png']
    cells = np.arange(24) * 4 + 2  # display pixel at the centre of each grid cell
    for block in range(2):
        grass = trace.class_prompts(block, 0, 1)
        # (c): white on the PPG's foreground cells, black elsewhere
        top, left = offsets[block][2]
        shown = fig3[top + cells][:, left + cells]                      # (24, 24, 3)
        np.testing.assert_array_equal(shown[..., 0] == 255, grass.foreground)
        np.testing.assert_array_equal(shown[..., 0] == 0, ~grass.foreground)
        # (e): every point's cell centre has the point colour
        top, left = offsets[block][4]
        assert grass.points is not None and len(grass.points) == 5
        for x, y in grass.points.astype(int):
            assert tuple(fig3[top + 4 * y + 2, left + 4 * x + 2]) == POINT_COLOR
        # the overview's prompt panel of the same block shows the same points
        top, left = result['layout']['overview.png'][0][2 + 2 * block]
        for x, y in grass.points.astype(int):
            assert tuple(canvases['overview.png'][top + 4 * y + 2, left + 4 * x + 2]) == \
                POINT_COLOR


def test_default_classes_are_those_predicted(tool, files, tmp_path):
    folder, image = files
    result = tool.main([ESCNET, str(folder / 'escnet.pth'), image, '--top', '2',
                        '--out', str(tmp_path), '--panel-size', '48'])
    scores = OpenVocabInferencer(ESCNET, str(folder / 'escnet.pth'))(image)['predictions'][
        'scores']  # classes present, most pixels first
    assert result['classes'] == [s['index'] for s in scores[:2]] and result['skipped'] == []
    assert result['panel_size'] == (48, 48)
    assert len([n for n in result['files'] if n.startswith('fig3_')]) == len(result['classes'])


def test_pruned_class_is_reported(tool, files, tmp_path, capsys):
    folder, image = files
    args = [ESCNET, str(folder / 'escnet.pth'), image, '--vocab', VOCAB, '--out', str(tmp_path),
            '--panel-size', '48', '--cfg-options', 'model.test_cfg.class_filter.type=topk',
            'model.test_cfg.class_filter.k=1']
    result = tool.main(args + ['--classes', VOCAB])
    assert len(result['classes']) == 1 and len(result['skipped']) == 4
    printed = capsys.readouterr().out
    assert printed.count('was pruned by the model for this image') == 4
    assert "(the model kept 1 of 5 classes: test_cfg.class_filter {'type': 'topk', 'k': 1})" \
        in printed
    kept = result['classes'][0]
    pruned = VOCAB.split(',')[(kept + 1) % 5]
    with pytest.raises(ValueError, match='none of the requested classes has prompts'):
        tool.main(args + ['--classes', pruned])


def test_errors_are_one_line(tool, files, tmp_path, capsys):
    folder, image = files
    with pytest.raises(ValueError, match=r"--classes: 'unicorn', 'dragon' not in the vocabulary "
                                         r'of 5 classes \(sky, grass, sand, snow, brick\)'):
        tool.main([ESCNET, str(folder / 'escnet.pth'), image, '--classes', 'sky,unicorn,dragon',
                   '--out', str(tmp_path)])
    status = run_cli(tool.main, tool.PROG, [CATSEG, str(folder / 'catseg.pth'), image,
                                            '--out', str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1
    assert err[0].startswith('tools/analysis/visualize_escnet.py: error: ')
    assert 'has no ESC-Net neck with SAM blocks (neck: CATSegAggregator)' in err[0]
    # ESC-Net without SAM blocks (Table 2 (a)) has no prompts either; refused before loading
    with pytest.raises(TypeError, match=r'\(neck: ESCNeck\(use_sam=False\)\)'):
        tool.main([ESCNET, str(folder / 'escnet.pth'), image, '--out', str(tmp_path),
                   '--cfg-options', 'model.neck.use_sam=False'])
    assert not list(tmp_path.glob('*.png'))


def test_boxes_are_drawn_on_the_region_edges():
    """A region of cells cols 2..5, rows 1..3 has the PPG box (1.5, 0.5, 5.5, 3.5) (SAM's
    half-cell shift then puts it on the region's outer edges): at 4 px per cell the outline runs
    on pixels cols 8..23, rows 4..15."""
    image = np.zeros((96, 96, 3), np.uint8)
    drawn = draw_prompts(image, (24, 24), boxes=np.array([[1.5, 0.5, 5.5, 3.5]]))
    outline = np.all(drawn == BOX_COLOR, axis=-1)
    expected = np.zeros((96, 96), bool)
    expected[4:16, [8, 23]] = True
    expected[[4, 15], 8:24] = True
    np.testing.assert_array_equal(outline, expected)
