"""A Hugging Face Hub model card for a published checkpoint: metadata block and body.

``tools/publish_model.py CKPT NAME --hub-folder OUT`` writes a folder the Hub accepts as a model
repository (upload it with the Hub's own CLI, ``hf upload USER/NAME OUT``): the weights, the
config and this card. The metadata block is built with ``huggingface_hub``'s own
:class:`~huggingface_hub.ModelCardData` (licence, library, tags, datasets, and the results as the
Hub's ``model-index`` with each number's source), so the Hub shows the task and the metrics.

Results: the metadata's ``model-index`` holds only the checkpoint's own numbers, from
``tools/eval_all.py``'s ``eval_all.json`` (the Hub shows them as self-reported; it groups results
by task and dataset, so numbers of other models would be merged into this model's). A model-zoo
name adds its index's ``Results`` (the paper's numbers, with their source and the paper's URL) to
the card's body, as the published numbers of the architecture, not of this checkpoint.
"""
import os.path as osp
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .model_zoo import ModelInfo

__all__ = ['BENCHMARK_DATASETS', 'HUB_TAGS', 'eval_all_results', 'index_results', 'model_card',
           'config_text', 'training_classes']

#: ``tools/eval_all.py``'s benchmark keys -> the dataset names of the model index.
BENCHMARK_DATASETS = dict(a847='ADE20K-847', pc459='PASCAL-Context-459', a150='ADE20K-150',
                          pc59='PASCAL-Context-59', pas20='PASCAL-VOC-20', pas20b='PASCAL-VOC-20b')
#: Tags of every card (the Hub's task and this package's kind of model).
HUB_TAGS = ('image-segmentation', 'semantic-segmentation', 'open-vocabulary', 'mmsegmentation',
            'mmseg_escnet')
_TASK = 'image-segmentation'


def _dataset_type(name: str) -> str:
    """The Hub's dataset ``type``: a lower-case slug of the name."""
    return name.lower().replace(' ', '-')


def eval_all_results(summary: Mapping[str, Any]) -> List[EvalResult]:
    """The mIoU of an ``eval_all.json`` (``{'results': {benchmark: {'mIoU': ...}}}``).

    Args:
        summary (Mapping): the loaded ``eval_all.json``.

    Returns:
        list[EvalResult]: one per evaluated benchmark, in Table 1's order, without a source (the
        publisher's own numbers).

    Raises:
        ValueError: for a file that is not an ``eval_all.json`` or names unknown benchmarks.
    """
    results = summary.get('results') if isinstance(summary, Mapping) else None
    if not isinstance(results, Mapping):
        raise ValueError('not an eval_all.json of tools/eval_all.py (no "results" object)')
    unknown = sorted(set(results) - set(BENCHMARK_DATASETS))
    if unknown:
        raise ValueError(f'eval_all.json names unknown benchmarks {unknown}; known: '
                         f'{list(BENCHMARK_DATASETS)}')
    return [EvalResult(task_type=_TASK, task_name='Semantic Segmentation',
                       dataset_type=_dataset_type(BENCHMARK_DATASETS[key]),
                       dataset_name=BENCHMARK_DATASETS[key], metric_type='mIoU',
                       metric_value=float(results[key]['mIoU']))
            for key in BENCHMARK_DATASETS if 'mIoU' in results.get(key, {})]


def collection_urls(info: ModelInfo) -> Tuple[Optional[str], Optional[str]]:
    """The paper and code URLs of the model's collection in its metafile (None if absent)."""
    with open(info.metafile, encoding='utf-8') as f:
        collections = (yaml.safe_load(f) or {}).get('Collections') or []
    for entry in collections:
        if isinstance(entry, Mapping) and entry.get('Name') == info.collection:
            return ((entry.get('Paper') or {}).get('URL'), (entry.get('Code') or {}).get('URL'))
    return None, None


def index_results(info: ModelInfo) -> List[Tuple[str, float, str]]:
    """The mIoU ``Results`` of a model-zoo entry: (dataset, mIoU, source) with the collection's
    paper URL (or code URL) in the source."""
    paper, code = collection_urls(info)
    url = paper or code
    return [(entry['Dataset'], float(entry['Metrics']['mIoU']),
             str(entry.get('Source') or 'model index') + (f' ({url})' if url else ''))
            for entry in info.results if 'mIoU' in (entry.get('Metrics') or {})]


def model_card(name: str, *, weights_file: str, sha256: str, config_file: str,
               license_id: Optional[str], results: Sequence[EvalResult],
               info: Optional[ModelInfo] = None, classes: Optional[Sequence[str]] = None,
               results_source: str = 'this checkpoint') -> ModelCard:
    """The card of a published checkpoint.

    Args:
        name (str): the model's name on the Hub.
        weights_file (str): the weights' file name in the folder.
        sha256 (str): their SHA-256.
        config_file (str): the config's file name in the folder.
        license_id (str, optional): the Hub's licence identifier (e.g. ``'apache-2.0'``); None:
            ``other``, to be set by the publisher.
        results (Sequence[EvalResult]): the checkpoint's own numbers (:func:`eval_all_results`).
        info (ModelInfo, optional): the model-zoo entry it was trained as (collection, training
            data; its published numbers go to the body).
        classes (Sequence[str], optional): the training classes recorded in the checkpoint.
        results_source (str): how the checkpoint's numbers were obtained, for the body.

    Returns:
        ModelCard: metadata block and body; ``card.save(path)`` writes ``README.md``.
    """
    metadata = dict(info.metadata) if info else {}
    datasets = metadata.get('Training Data')
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    tags = list(HUB_TAGS) + ([info.collection] if info and info.collection else [])
    data = ModelCardData(license=license_id or 'other', library_name='mmseg_escnet', tags=tags,
                         datasets=datasets or None, pipeline_tag=_TASK, model_name=name,
                         eval_results=list(results) or None)
    lines = [f'# {name}', '',
             'Open-vocabulary semantic segmentation with mmseg_escnet (MMSegmentation 1.x / '
             'MMEngine)' + (f': {info.collection}, model-zoo entry `{info.name}`.' if info
                            else '.'), '',
             '| file | what |', '|---|---|',
             f'| `{weights_file}` | the weights (`state_dict`, plain `meta`), SHA-256 `{sha256}` |',
             f'| `{config_file}` | the config they were trained with |', '']
    if datasets:
        lines += [f'Trained on {", ".join(datasets)}.', '']
    if classes:
        shown = ', '.join(classes[:20]) + (f', ... ({len(classes)} in all)'
                                           if len(classes) > 20 else '')
        lines += [f'Training classes: {shown}.', '']
    lines += ['## Use', '', 'With mmseg_escnet installed, this folder is '
              'a model: download it and give its path.', '', '```bash',
              f'hf download <user>/{name} --local-dir {name}',
              f'python demo/image_demo.py IMAGE {name}/ --vocab ade150',
              f'python tools/test.py {name}/{config_file} {name}/{weights_file}', '```', '',
              'The weights are a safetensors file (nothing is unpickled when it loads; its '
              '`mmseg_escnet.meta` metadata holds the training classes and versions); any '
              'vocabulary works at test time (`--vocab`, `model.test_vocabulary`).', '']
    if results:
        lines += ['## Results of this checkpoint (mIoU)', '', f'From {results_source}.', '',
                  '| dataset | mIoU |', '|---|---|']
        lines += [f'| {r.dataset_name} | {r.metric_value:.1f} |' for r in results]
        lines.append('')
    published = index_results(info) if info else []
    if published:
        lines += [f'## Published numbers of {info.collection} (mIoU, not of this checkpoint)', '',
                  '| dataset | mIoU | source |', '|---|---|---|']
        lines += [f'| {dataset} | {value:.1f} | {source} |' for dataset, value, source in published]
        lines.append('')
    return ModelCard(f'---\n{data.to_yaml()}\n---\n\n' + '\n'.join(lines))


def config_text(meta: Mapping[str, Any], fallback: Optional[str]) -> str:
    """The training config's text: the checkpoint's ``meta['config']``, else ``fallback``'s file.

    Raises:
        ValueError: when neither gives a config.
    """
    text = meta.get('config')
    if isinstance(text, str) and text.strip():
        return text
    if fallback and osp.isfile(fallback):
        with open(fallback, encoding='utf-8') as f:
            return f.read()
    raise ValueError('the checkpoint records no config (meta.config) and none was given: pass '
                     '--config CONFIG or a model-zoo NAME')


def training_classes(meta: Mapping[str, Any]) -> Optional[List[str]]:
    """The classes recorded in a published checkpoint's ``meta['dataset_meta']``, if any."""
    dataset_meta: Dict[str, Any] = meta.get('dataset_meta') or {}
    classes = dataset_meta.get('classes') if isinstance(dataset_meta, Mapping) else None
    return [str(c) for c in classes] if classes else None
