"""hash_record: a file's SHA-256 written down with its size and mtime, trusted while they fit."""
import hashlib
import json
import os

from mmseg_escnet.checkpoints.hash_record import (read_hash_record, recorded_sha256,
                                                  write_hash_record)


def test_record_is_trusted_only_while_the_file_is_unchanged(tmp_path):
    file, record = tmp_path / 'w.pth', str(tmp_path / 'sub' / 'w.pth.json')
    file.write_bytes(b'weights')
    sha = hashlib.sha256(b'weights').hexdigest()
    write_hash_record(record, str(file), sha, url='https://h/w.pth')
    assert read_hash_record(record)['url'] == 'https://h/w.pth'
    assert recorded_sha256(record, str(file)) == sha
    assert recorded_sha256(record, str(file), url='https://h/w.pth') == sha
    assert recorded_sha256(record, str(file), url='https://other/w.pth') is None
    file.write_bytes(b'WEIGHTS')  # same size, new mtime
    os.utime(file, ns=(1, 1))
    assert recorded_sha256(record, str(file)) is None
    assert recorded_sha256(record, str(tmp_path / 'missing')) is None
    for bad in ('not json', json.dumps(dict(sha256='abc', size=1, mtime_ns=1)),
                json.dumps(dict(sha256=sha, size='7', mtime_ns=1))):
        with open(record, 'w') as f:
            f.write(bad)
        assert read_hash_record(record) is None
    assert read_hash_record(str(tmp_path / 'none.json')) is None
    assert not os.path.exists(record + '.tmp')


def _write_many(args):
    record, file, sha = args
    for _ in range(100):
        write_hash_record(record, file, sha)
    return True


def test_processes_writing_one_record_at_once(tmp_path):
    """The ranks of a node record the same Hub file together: no error, one whole record."""
    import multiprocessing
    file = tmp_path / 'w.pth'
    file.write_bytes(b'weights')
    sha = hashlib.sha256(b'weights').hexdigest()
    record = str(tmp_path / 'w.pth.hub.json')
    with multiprocessing.get_context('fork').Pool(3) as pool:
        assert pool.map(_write_many, [(record, str(file), sha)] * 3) == [True] * 3
    assert recorded_sha256(record, str(file)) == sha
    assert sorted(os.listdir(tmp_path)) == ['w.pth', 'w.pth.hub.json']  # no temporary files
