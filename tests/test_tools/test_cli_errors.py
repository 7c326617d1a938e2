"""Every command-line tool reports an error as one line, ``<prog>: error: <message>``, exit 1.

The tools run as a user runs them (``python tools/...py`` in the repository, in subprocesses started
together), on bad inputs that fail before any model is built: a missing raw release, a corrupt
PNG, an output folder below a regular file (the tests run as root, which chmod does not stop), a
truncated checkpoint, a text file given as a checkpoint, a missing config and a missing
checkpoint to convert. ``--debug`` re-raises instead: checked end to end for one tool (a
traceback on stderr) and in this process for every case.
"""
import importlib.util
import os
import os.path as osp
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, NamedTuple

import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tests', 'test_datasets'))
from prep_helpers import run_tool  # noqa: E402
from raw_ade20k import make_ade150_release  # noqa: E402
from raw_coco_stuff import make_coco_stuff_release  # noqa: E402
from raw_pascal import make_voc2012_release  # noqa: E402

from mmseg_escnet.datasets.preparation import ade20k_150  # noqa: E402
from mmseg_escnet.datasets.preparation.common import TMP_PREFIX  # noqa: E402
from mmseg_escnet.utils import run_cli  # noqa: E402

CONVERTERS = 'tools/dataset_converters'


class Case(NamedTuple):
    """One bad command line: the tool, its arguments and the path the message must name."""

    script: str
    args: List[str]
    culprit: str
    error: type  # what ``main`` raises (seen with --debug)


def _regular_file(folder: str) -> str:
    path = osp.join(folder, 'a_file')
    with open(path, 'w') as f:
        f.write('a regular file: no folder can be created below it\n')
    return path


def _truncated_checkpoint(folder: str) -> str:
    path = osp.join(folder, 'iter_8.pth')
    torch.save({'state_dict': {'w': torch.arange(10_000, dtype=torch.float32)}}, path)
    with open(path, 'r+b') as f:
        f.truncate(osp.getsize(path) // 2)  # what a killed save or download leaves
    return path


def _corrupt_voc_release(folder: str) -> tuple:
    release = make_voc2012_release(folder, {'2007_000032': np.zeros((2, 2), np.uint8)},
                                   ['2007_000032'])
    mask = osp.join(release, 'SegmentationClassAug', '2007_000032.png')
    with open(mask, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n but cut short')
    return release, mask


@pytest.fixture(scope='module')
def cases(tmp_path_factory) -> Dict[str, Case]:
    """The bad command lines, on files made in a temporary folder."""
    tmp = str(tmp_path_factory.mktemp('cli_errors'))
    blocker = _regular_file(tmp)
    coco = make_coco_stuff_release(osp.join(tmp, 'coco'),
                                   {'val2017': {'000000000139': np.zeros((2, 2), np.uint8)}})
    voc, corrupt_png = _corrupt_voc_release(osp.join(tmp, 'voc'))
    truncated = _truncated_checkpoint(tmp)
    missing_root = osp.join(tmp, 'no_such_release')
    missing_config = osp.join(tmp, 'no_such_config.py')
    missing_checkpoint = osp.join(tmp, 'no_such_model_final.pth')
    unwritable = osp.join(blocker, 'out')
    return {
        'converter, missing raw root': Case(
            f'{CONVERTERS}/prepare_ade20k_150.py', [missing_root], missing_root,
            FileNotFoundError),
        'converter, corrupt png': Case(
            f'{CONVERTERS}/prepare_voc.py', [voc, '--out-dir', osp.join(tmp, 'voc_out'),
                                             '--nproc', '1'], corrupt_png, ValueError),
        'converter, unwritable out dir': Case(
            f'{CONVERTERS}/prepare_coco_stuff.py', [coco, '--out-dir', unwritable],
            unwritable, OSError),
        'publish, truncated checkpoint': Case(
            'tools/publish_model.py', [truncated, osp.join(tmp, 'published', 'm.pth')],
            truncated, ValueError),
        'publish, text file': Case(
            'tools/publish_model.py', [blocker, osp.join(tmp, 'published', 'm.pth')], blocker,
            ValueError),
        'count_params, missing config': Case(
            'tools/analysis/count_params.py', [missing_config], missing_config,
            FileNotFoundError),
        'catseg2mmseg, missing input': Case(
            'tools/model_converters/catseg2mmseg.py',
            [missing_checkpoint, osp.join(tmp, 'converted.pth')], missing_checkpoint,
            FileNotFoundError),
    }


@pytest.fixture(scope='module')
def runs(cases):
    """Every case run in a subprocess (as many at once as there are cores), plus one with
    ``--debug``."""
    commands = {name: [case.script, *case.args] for name, case in cases.items()}
    debug = cases['converter, missing raw root']
    commands['--debug'] = [debug.script, *debug.args, '--debug']
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        done = dict(zip(commands, pool.map(lambda command: run_tool(*command),
                                           commands.values())))
    return done


def _load_main(script: str):
    """``main`` of a tool file; the converters' scripts only call their module's ``main``."""
    spec = importlib.util.spec_from_file_location(osp.splitext(osp.basename(script))[0],
                                                  osp.join(ROOT, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _prog(script: str) -> str:
    """The name a tool gives itself in messages."""
    return osp.basename(script) if script.startswith(CONVERTERS) else script


CASE_NAMES = ['converter, missing raw root', 'converter, corrupt png',
              'converter, unwritable out dir', 'publish, truncated checkpoint',
              'publish, text file', 'count_params, missing config', 'catseg2mmseg, missing input']


@pytest.mark.parametrize('name', CASE_NAMES)
def test_one_line_error(cases, runs, name):
    case, proc = cases[name], runs[name]
    assert proc.returncode == 1, proc.stderr
    assert 'Traceback' not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f'{_prog(case.script)}: error: ')
    assert case.culprit in lines[0]
    assert lines[0].endswith(' (--debug shows the traceback)')


def test_unwritable_out_dir_fails_before_converting(runs):
    proc = runs['converter, unwritable out dir']
    assert 'cannot write the prepared files (--out-dir) into' in proc.stderr
    assert 'to convert' not in proc.stdout  # convert_all was never reached


def test_debug_shows_the_traceback(cases, runs):
    proc = runs['--debug']
    assert proc.returncode == 1
    assert proc.stderr.startswith('Traceback (most recent call last):')
    assert cases['converter, missing raw root'].culprit in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize('name', CASE_NAMES)
def test_debug_reraises(cases, name):
    case = cases[name]
    main = _load_main(case.script)
    with pytest.raises(case.error) as error:
        run_cli(main, _prog(case.script), case.args + ['--debug'])
    assert case.culprit in str(error.value)


def test_next_run_removes_a_killed_runs_temporary_files(tmp_path, capsys):
    raw = make_ade150_release(str(tmp_path), {'ADE_val_00000001': np.ones((2, 3), np.uint8)})
    out_dir = osp.join(raw, ade20k_150.OUT_ANNOTATION_DIR)
    os.makedirs(out_dir)
    leftover = osp.join(out_dir, TMP_PREFIX + 'k1ll3d.png')  # as write_image names them
    with open(leftover, 'wb') as f:
        f.write(b'\x89PNG half written')
    assert run_cli(ade20k_150.main, 'prepare_ade20k_150.py', [raw, '--nproc', '1']) == 0
    assert os.listdir(out_dir) == ['ADE_val_00000001.png']
    assert 'removed 1 temporary file(s) (.tmp-*) left by an interrupted run' in \
        capsys.readouterr().out
