"""The repository stands alone: code, configs, docs and tests name no file outside it.

A user's clone has nothing beside it, so a reference to a sibling folder or to a machine path
is a broken link (or a test that fails on their machine).
"""
import os
import os.path as osp
import re

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SUFFIXES = ('.py', '.md', '.sh', '.yml', '.yaml', '.cfg', '.toml', '.txt', '.json')
SKIP_DIRS = {'.git', 'work_dirs', 'data', '__pycache__', 'build', 'dist', '.pytest_cache'}
# a sibling folder of the repository, an absolute machine path, or private notes
OUTSIDE = re.compile(r'\.\./shared|(?<![\w.])/work/|/root/|/home/\w|shared/(notes|conformance)'
                     r'|catseg_reference\.md|sed_lmseg_reference\.md|mmseg_conventions\.md')


def _text_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith('.egg-info')]
        for name in filenames:
            path = osp.join(dirpath, name)
            if name.endswith(SUFFIXES) and path != osp.abspath(__file__):
                yield path


def test_no_reference_outside_the_repository():
    found = []
    for path in _text_files():
        with open(path, encoding='utf-8', errors='replace') as f:
            for number, line in enumerate(f, 1):
                if OUTSIDE.search(line):
                    found.append(f'{osp.relpath(path, ROOT)}:{number}: {line.strip()[:120]}')
    assert not found, 'references outside the repository:\n' + '\n'.join(found)


def test_the_pattern_finds_what_it_should():
    for line in ('see ../shared/conformance', 'open("/work/main/x")', 'notes §11 in '
                 'catseg_reference.md', 'torch.load("/root/.cache/x")'):
        assert OUTSIDE.search(line), line
    for line in ('work_dirs/escnet/iter_4.pth', './work_dirs/x', 'shared by both tools'):
        assert not OUTSIDE.search(line), line
