"""Run ``tools/train.py ARGS`` with a file-size limit, as on a disk that fills up.

Environment: ``FSIZE_LIMIT`` is the largest file (bytes) this process may write
(``RLIMIT_FSIZE``); SIGXFSZ is ignored so a write beyond it fails with ``EFBIG`` (errno 27), the
way a full disk fails with ``ENOSPC``.
"""
import os
import os.path as osp
import resource
import runpy
import signal
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
limit = int(os.environ['FSIZE_LIMIT'])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = [osp.join(ROOT, 'tools', 'train.py')] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
