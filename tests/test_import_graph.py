"""The package is layered: data flows one way and no module imports upwards or in a circle.

Every ``import`` of every module counts, function-level ones included (hiding a cycle in a
function does not remove it). See docs/architecture.md.
"""
import ast
import os
import os.path as osp
from collections import defaultdict
from typing import Dict, Set

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PACKAGE = 'mmseg_escnet'

#: Sub-package -> layer; a module may import its own sub-package and lower layers only.
LAYERS = {
    'version': 0, 'utils': 0,
    'text': 1,
    'checkpoints': 2,
    'models': 3, 'datasets': 3, 'evaluation': 3, 'visualization': 3,
    'engine': 4,
    'apis': 5,
}


def _module_name(path: str) -> str:
    rel = osp.relpath(path, ROOT)[:-len('.py')].split(os.sep)
    return '.'.join(rel[:-1] if rel[-1] == '__init__' else rel)


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the package modules it imports (resolved, at module granularity)."""
    modules = {}
    for dirpath, _, files in os.walk(osp.join(ROOT, PACKAGE)):
        for name in files:
            if name.endswith('.py'):
                modules[_module_name(osp.join(dirpath, name))] = osp.join(dirpath, name)
    graph = defaultdict(set)
    for module, path in modules.items():
        is_package = path.endswith('__init__.py')
        with open(path, encoding='utf-8') as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split('.')
                    base = base[:len(base) - node.level + (1 if is_package else 0)]
                    prefix = '.'.join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ''
                targets = [prefix] + [f'{prefix}.{alias.name}' for alias in node.names]
            for target in targets:
                # the longest known module the import names (a name inside a module -> module)
                while target and target not in modules:
                    target = target.rpartition('.')[0]
                if target.startswith(PACKAGE + '.') and target != module:
                    graph[module].add(target)
    return graph


def _layer(module: str):
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else None


def test_no_module_imports_a_higher_or_peer_layer():
    wrong = []
    for module, targets in import_graph().items():
        own = _layer(module)
        if own is None:  # the package's __init__ imports everything to register it
            continue
        assert own in LAYERS, f'{module}: sub-package {own!r} is not in LAYERS'
        for target in targets:
            other = _layer(target)
            if other != own and not LAYERS[other] < LAYERS[own]:
                wrong.append(f'{module} -> {target} ({own} is layer {LAYERS[own]}, {other} is '
                             f'layer {LAYERS[other]})')
    assert not wrong, 'imports against the layering:\n' + '\n'.join(sorted(wrong))


def test_no_import_cycle():
    graph = import_graph()
    state: Dict[str, int] = {}  # 1: on the stack, 2: done
    stack = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + '.'):  # a package importing its own submodules
                continue
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError('import cycle: ' + ' -> '.join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_graph_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert 'mmseg_escnet.text' in graph['mmseg_escnet.models.text.class_embedder']
    assert 'mmseg_escnet.checkpoints.safe_loading' in graph['mmseg_escnet.checkpoints.download']
