"""tools/generate_descriptions.py against a fake OpenAI-compatible server on 127.0.0.1.

The server answers ``POST /v1/chat/completions`` in OpenAI's response shape. A test scripts the
first responses (a bad answer, a slow answer, an HTTP error); every other request gets a valid
one-sentence answer that names the class and attribute asked about. The requests go through the
real ``openai`` client; backoff delays are 0.01 s, the client timeout of the slow case 0.3 s.
"""
import importlib.util
import json
import os
import os.path as osp
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

import pytest

from mmseg_escnet.text.description_generator import (QUESTIONS, SYSTEM_PROMPT,
                                                     DescriptionGenerationError, RetryPolicy,
                                                     generate_descriptions, make_client,
                                                     resolve_api_key)
from mmseg_escnet.text.descriptions import ATTRIBUTES, load_descriptions
from mmseg_escnet.utils import run_cli

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = 'tools/generate_descriptions.py'
CLASSES = [['sky'], ['pot', 'flowerpot'], ['chair']]
FAST = RetryPolicy(max_retries=3, delay=0.01)


def ok(text: Optional[str]) -> dict:
    """A scripted answer."""
    return dict(status=200, content=text)


def http_error(status: int, message: str = 'scripted error') -> dict:
    """A scripted HTTP error with OpenAI's error body."""
    return dict(status=status, error=dict(message=message, type='test_error', code=None))


def answer_for(question: str) -> str:
    """A valid one-sentence answer naming the class and attribute of ``question``."""
    attribute = next(a for a in ATTRIBUTES if QUESTIONS[a].split('{')[0] in question)
    name = question.split(' a ', 1)[1].split(' typically')[0]
    return f'"A {name} has a typical {attribute} seen in photos."'


class FakeServer:
    """A scripted OpenAI-compatible chat server; ``requests`` holds every request body."""

    def __init__(self) -> None:
        self.script: List[dict] = []
        self.requests: List[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
                body['path'], body['auth'] = self.path, self.headers.get('Authorization')
                with server.lock:
                    server.requests.append(body)
                    step = server.script.pop(0) if server.script else None
                if step is None:
                    step = ok(answer_for(body['messages'][-1]['content']))
                time.sleep(step.get('sleep', 0))
                if 'body' in step:  # raw bytes, not JSON
                    payload = None
                elif 'raw' in step:
                    payload = step['raw']
                elif 'error' in step:
                    payload = dict(error=step['error'])
                else:
                    payload = {
                        'id': f'chatcmpl-{len(server.requests)}', 'object': 'chat.completion',
                        'created': int(time.time()), 'model': body['model'],
                        'choices': [{'index': 0, 'finish_reason': step.get('finish', 'stop'),
                                     'message': {'role': 'assistant',
                                                 'content': step['content']}}],
                        'usage': {'prompt_tokens': 30, 'completion_tokens': 12,
                                  'total_tokens': 42}}
                data = step['body'] if 'body' in step else json.dumps(payload).encode()
                try:
                    self.send_response(step['status'])
                    self.send_header('Content-Type', 'application/json')
                    self.send_header('Content-Length', str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (the timeout case)
                    pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/v1'
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs=dict(poll_interval=0.02), daemon=True)

    def questions(self) -> List[str]:
        """The user question of every request so far."""
        return [r['messages'][-1]['content'] for r in self.requests]


@pytest.fixture
def server():
    fake = FakeServer()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


def run(server: FakeServer, out, classes=CLASSES, model: str = 'fake-model', timeout: float = 5,
        retry: RetryPolicy = FAST, **kwargs):
    """Generate with the real openai client against ``server``; returns (result, log lines)."""
    lines: List[str] = []
    client = make_client(server.url, 'test-key', timeout)
    result = generate_descriptions(classes, out, client=client, model=model, vocabulary='test',
                                   base_url=server.url, retry=retry, log=lines.append, **kwargs)
    return result, lines


def test_full_run_writes_a_valid_file(server, tmp_path):
    out = tmp_path / 'd.json'
    result, lines = run(server, out, temperature=0.2)
    loaded = load_descriptions(str(out))
    assert loaded.descriptions == result.descriptions
    assert list(loaded.descriptions) == ['sky', 'pot, flowerpot', 'chair']
    assert loaded.descriptions['sky']['color'] == 'A sky has a typical color seen in photos.'
    assert loaded.meta['model'] == 'fake-model' and loaded.meta['base_url'] == server.url
    assert loaded.meta['vocabulary'] == 'test' and loaded.meta['temperature'] == 0.2
    assert loaded.meta['generator'] == TOOL
    assert loaded.meta['prompt']['system'] == SYSTEM_PROMPT
    assert loaded.meta['prompt']['questions'] == QUESTIONS
    # one request per class and attribute, each asking about its class
    assert len(server.requests) == len(CLASSES) * len(ATTRIBUTES)
    for r in server.requests:
        assert r['path'] == '/v1/chat/completions' and r['model'] == 'fake-model'
        assert r['temperature'] == 0.2 and r['auth'] == 'Bearer test-key'
        assert r['messages'][0] == dict(role='system', content=SYSTEM_PROMPT)
    questions = server.questions()
    for k, synonyms in enumerate(CLASSES):
        for a, attribute in enumerate(ATTRIBUTES):
            question = questions[3 * k + a]
            assert synonyms[0] in question and question.startswith(QUESTIONS[attribute][:12])
    assert 'flowerpot' in questions[3]  # the synonyms disambiguate the class
    assert lines[:3] == ['[1/3] sky', '[2/3] pot', '[3/3] chair']


@pytest.mark.parametrize('bad', [
    ok(''), ok('   '), ok('A sky is blue. It has clouds.'),
    ok('A sky is ' + 'very ' * 80 + 'blue.'), dict(status=200, content='A sky is', finish='length'),
    ok(None), dict(status=200, raw={'id': 'x', 'object': 'chat.completion', 'choices': []}),
    http_error(500), http_error(429, 'rate limited'), dict(status=200, content='late', sleep=0.6),
    dict(status=200, body=b'<html><body>proxy says hello</body></html>')],
    ids=['empty', 'blank', 'two-sentences', 'over-77-tokens', 'cut-off', 'null', 'no-choices',
         'http-500', 'http-429', 'timeout', 'invalid-json'])
def test_retried_then_succeeds(server, tmp_path, bad):
    server.script = [bad, bad]
    timeout = 0.3 if 'sleep' in bad else 5  # the slow answer takes 0.6 s
    result, _ = run(server, tmp_path / 'd.json', classes=[['sky']], timeout=timeout)
    assert len(server.requests) == 2 + len(ATTRIBUTES)  # two failed attempts, then one each
    assert server.questions()[:3] == [server.questions()[0]] * 3  # the color question, again
    assert result.descriptions['sky']['color'] == 'A sky has a typical color seen in photos.'


@pytest.mark.parametrize('status, message', [(401, 'Incorrect API key provided'),
                                             (404, 'The model fake-model does not exist')])
def test_non_retryable_error_stops_at_once(server, tmp_path, status, message):
    server.script = [http_error(status, message)]
    out = tmp_path / 'd.json'
    with pytest.raises(DescriptionGenerationError) as info:
        run(server, out)
    text = str(info.value)
    assert f'HTTP {status}' in text and message in text and "'sky'" in text and 'color' in text
    assert 'not retried' in text and 'Nothing was saved.' in text
    assert len(server.requests) == 1 and not out.exists()


@pytest.mark.parametrize('bad, problem', [
    (ok('A sky is ' + 'x' * 2_000_000 + '.'), "more than CLIP's context of 77 tokens"),
    (dict(status=200, body=b'{"choices": [' + b'x' * 2_000_000), 'invalid JSON'),
    (dict(status=200, content='A sky is ' + 'very ' * 400_000, finish='length'), 'cut off'),
], ids=['huge-answer', 'huge-invalid-json', 'huge-cut-off'])
def test_huge_answers_give_a_short_error(server, tmp_path, bad, problem):
    server.script = [bad] * 2
    with pytest.raises(DescriptionGenerationError) as info:
        run(server, tmp_path / 'd.json', classes=[['sky']],
            retry=RetryPolicy(max_retries=1, delay=0.01))
    text = str(info.value)
    assert problem in text and 'after 2 attempt(s)' in text and len(text) < 1000, text[:2000]


def test_out_of_retries_then_resume(server, tmp_path):
    out = tmp_path / 'd.json'
    # sky is described, pot's color too, then pot's shape fails three times (HTTP 503)
    server.script = [ok(f'A sky has a typical {a} seen in photos.') for a in ATTRIBUTES]
    server.script += [ok('A pot has a typical color seen in photos.')]
    server.script += [http_error(503, 'overloaded')] * 3
    waits: List[float] = []
    with pytest.raises(DescriptionGenerationError) as info:
        run(server, out, retry=RetryPolicy(max_retries=2, delay=0.01), sleep=waits.append)
    assert waits == [0.01, 0.02]  # exponential backoff
    text = str(info.value)
    assert "the shape description of 'pot'" in text and 'after 3 attempt(s)' in text
    assert 'HTTP 503: overloaded' in text and 'Saved so far: 1 of 3 classes' in text
    assert len(server.requests) == 4 + 3
    partial = load_descriptions(str(out))
    assert list(partial.descriptions) == ['sky']  # pot is incomplete: not written

    server.requests.clear()
    result, lines = run(server, out)
    assert lines[0] == f'1 of 3 classes already in {out}; 2 to generate'
    assert lines[1:3] == ['[2/3] pot', '[3/3] chair']
    assert len(server.requests) == 2 * len(ATTRIBUTES)
    assert not any('sky' in q for q in server.questions())
    assert list(load_descriptions(str(out)).descriptions) == ['sky', 'pot, flowerpot', 'chair']
    assert result.descriptions['sky'] == partial.descriptions['sky']


def test_unreachable_server_is_retried(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    client = make_client(f'http://127.0.0.1:{port}/v1', 'test-key', 5)
    waits: List[float] = []
    with pytest.raises(DescriptionGenerationError, match=r"color description of 'sky' after 2 "
                       r'attempt\(s\); last problem: could not reach the server'):
        generate_descriptions([['sky']], tmp_path / 'd.json', client=client, model='m',
                              vocabulary='test', retry=RetryPolicy(max_retries=1, delay=0.5),
                              log=lambda line: None, sleep=waits.append)
    assert waits == [0.5]


def test_without_openai(monkeypatch):
    monkeypatch.setitem(sys.modules, 'openai', None)  # as if not installed
    with pytest.raises(ImportError, match='pip install openai'):
        make_client('http://127.0.0.1:9/v1', 'k', 1.0)


def test_backoff():
    retry = RetryPolicy(max_retries=9, delay=1.0, max_delay=10.0)
    assert [retry.wait(k) for k in range(1, 6)] == [1, 2, 4, 8, 10]
    assert retry.wait(1, hint=3.0) == 3.0 and retry.wait(1, hint=99.0) == 10.0
    with pytest.raises(ValueError, match='max_retries'):
        RetryPolicy(max_retries=-1)


def test_resume_refuses_other_settings(server, tmp_path):
    out = tmp_path / 'd.json'
    run(server, out, classes=CLASSES[:1])
    before = out.read_bytes()
    server.requests.clear()
    with pytest.raises(ValueError, match=r"another model \(model: 'fake-model' in the file, "
                                         r"'other-model' now\).*--force-mix"):
        run(server, out, model='other-model')
    with pytest.raises(ValueError, match='another temperature'):
        run(server, out, temperature=1.0)
    assert not server.requests and out.read_bytes() == before
    # --force-mix adds to it and records the earlier settings
    result, _ = run(server, out, model='other-model', force_mix=True)
    assert len(result.descriptions) == 3 and result.meta['model'] == 'other-model'
    assert result.meta['previous_runs'][0]['model'] == 'fake-model'


@pytest.mark.parametrize('content', ['{"some": "json"}', 'not json at all', ''])
def test_refuses_to_overwrite_another_file(server, tmp_path, content):
    out = tmp_path / 'd.json'
    out.write_text(content)
    with pytest.raises(ValueError, match='not a descriptions file.*not overwritten'):
        run(server, out)
    assert out.read_text() == content and not server.requests


def test_a_complete_file_is_left_alone(server, tmp_path):
    out = tmp_path / 'd.json'
    first, _ = run(server, out)
    server.requests.clear()
    again, lines = run(server, out)
    assert not server.requests and again.descriptions == first.descriptions
    assert lines == [f'3 of 3 classes already in {out}; 0 to generate',
                     f'3 of 3 classes described in {out}']


def test_api_key():
    env: Dict[str, str] = {'MY_KEY': ' sk-1 '}
    assert resolve_api_key('MY_KEY', None, env) == 'sk-1'
    assert resolve_api_key('OPENAI_API_KEY', 'http://localhost:8000/v1', env) == 'no-key-needed'
    with pytest.raises(ValueError, match='OPENAI_API_KEY is not set'):
        resolve_api_key('OPENAI_API_KEY', None, env)


def _start(*args: str) -> subprocess.Popen:
    """``python tools/generate_descriptions.py ARGS`` as a user runs it, without an API key."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    env.pop('OPENAI_API_KEY', None)
    return subprocess.Popen([sys.executable, TOOL, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_cli(server, tmp_path):
    vocab = tmp_path / 'classes.txt'
    vocab.write_text('sky\nchair\n')
    out = tmp_path / 'sub' / 'd.json'
    common = ['--model', 'fake-model', '--base-url', server.url, '--retry-delay', '0.01']
    server.script = [ok('')]  # one retried answer
    good = _start('--vocab', str(vocab), '--out', str(out), '--temperature', '0', *common)
    bad = _start('--vocab', 'nope_vocab', '--out', str(tmp_path / 'x.json'), *common)
    out_good, err_good = good.communicate(timeout=120)
    out_bad, err_bad = bad.communicate(timeout=120)
    assert good.returncode == 0, err_good
    assert '[1/2] sky' in out_good and '[2/2] chair' in out_good
    loaded = load_descriptions(str(out))
    assert list(loaded.descriptions) == ['sky', 'chair']
    assert loaded.meta['vocabulary'] == str(vocab) and loaded.meta['temperature'] == 0
    assert loaded.meta['generator'] == TOOL and loaded.meta['base_url'] == server.url
    assert len(server.requests) == 2 * len(ATTRIBUTES) + 1
    assert all(r['auth'] == 'Bearer no-key-needed' for r in server.requests)
    assert bad.returncode == 1 and not out_bad
    assert err_bad.startswith(f"{TOOL}: error: 'nope_vocab' is not a built-in vocabulary")
    assert 'Traceback' not in err_bad and not (tmp_path / 'x.json').exists()


@pytest.mark.parametrize('args, message', [
    (['--out', 'd.txt'], 'must end in .json'),
    (['--max-retries', '-1'], '--max-retries must be >= 0'),
    (['--timeout', '0'], '--timeout must be > 0'),
    (['--temperature', '3'], '--temperature must be in [0, 2]'),
    (['--base-url', ''], 'OPENAI_API_KEY is not set')])
def test_cli_bad_arguments(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.delenv('OPENAI_API_KEY', raising=False)
    spec = importlib.util.spec_from_file_location('generate_descriptions', osp.join(ROOT, TOOL))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    base = ['--vocab', 'sky,', '--out', str(tmp_path / 'd.json'), '--model', 'm']
    assert run_cli(tool.main, TOOL, base + args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'{TOOL}: error: ') and message in err, err
