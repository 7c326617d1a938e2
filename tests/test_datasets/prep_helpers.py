"""Helpers shared by the preparation tests (not a test module)."""
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def start_tool(script, *args):
    """Start ``python SCRIPT ARGS`` in the repository as a user would, on this checkout's package.

    Args:
        script (str): Path relative to the repository, e.g. ``'tools/publish_model.py'``.
        *args (str): Command-line arguments.

    Returns:
        subprocess.Popen: The process, with text stdout and stderr pipes.
    """
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    return subprocess.Popen([sys.executable, script, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    """Wait for a :func:`start_tool` process; returns a ``CompletedProcess``."""
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_tool(script, *args):
    """Run ``python SCRIPT ARGS`` (see :func:`start_tool`) to the end."""
    return finish(start_tool(script, *args))


def read_bytes(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, folder)] = f.read()
    return out


def read_uint8_label(path):
    """An output label map, which must be a single-channel uint8 image."""
    label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert label is not None and label.dtype == np.uint8 and label.ndim == 2, path
    return label
