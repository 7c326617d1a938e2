"""Run ``tools/train.py ARGS``, killing this process (SIGKILL) at one moment of a checkpoint save.

Environment: ``KILL_AT`` is the iteration whose save is interrupted, ``KILL_STAGE`` the moment:

* ``writing``: the temporary file is half written (truncated to half its size, then killed);
* ``published``: the checkpoint is in place, ``last_checkpoint`` not yet updated;
* ``pointed``: ``last_checkpoint`` updated, the expired checkpoint not yet deleted.
"""
import os
import os.path as osp
import runpy
import signal
import sys

from mmseg_escnet.engine.checkpoint_hook import SafeCheckpointHook

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
STEP, STAGE = int(os.environ['KILL_AT']), os.environ['KILL_STAGE']
METHOD = dict(writing='_publish', published='_point_last_checkpoint',
              pointed='_remove_expired')[STAGE]
original = getattr(SafeCheckpointHook, METHOD)


def killing(self, *args):
    if self.last_ckpt.endswith(f'iter_{STEP}.pth'):
        if STAGE == 'writing':
            tmp = args[0]
            with open(tmp, 'r+b') as f:
                f.truncate(os.path.getsize(tmp) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args)


setattr(SafeCheckpointHook, METHOD, killing)
sys.argv = [osp.join(ROOT, 'tools', 'train.py')] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
