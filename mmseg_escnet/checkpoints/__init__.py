"""Checkpoints: safe loading, verified downloads, model-zoo names, and readers and converters of
the official CLIP, SAM and CAT-Seg formats. Nothing here imports the models."""
from .catseg_checkpoint import convert_catseg_checkpoint
from .catseg_official import convert_catseg_state_dict, map_catseg_key, strip_prefix
from .download import (ChecksumError, DownloadError, cache_path, default_cache_dir,
                       download_checkpoint, expected_sha256, file_sha256, load_checkpoint_from_url)
from .model_zoo import (ModelInfo, fetch_weights, get_model, list_models, load_from_model_zoo,
                        register_converter, resolve_checkpoint_arg)
from .safe_loading import checkpoint_file_problem, load_local_checkpoint
from .state_dict_fit import CheckpointMismatchError, check_state_dict_fits, checkpoint_state_dict

__all__ = [
    'convert_catseg_checkpoint', 'convert_catseg_state_dict', 'map_catseg_key', 'strip_prefix',
    'ChecksumError', 'DownloadError', 'cache_path', 'default_cache_dir', 'download_checkpoint',
    'expected_sha256', 'file_sha256', 'load_checkpoint_from_url', 'ModelInfo', 'fetch_weights',
    'get_model', 'list_models', 'load_from_model_zoo', 'register_converter',
    'resolve_checkpoint_arg', 'checkpoint_file_problem', 'load_local_checkpoint',
    'CheckpointMismatchError', 'check_state_dict_fits', 'checkpoint_state_dict'
]
