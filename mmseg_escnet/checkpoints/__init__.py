"""Checkpoints: safe loading, verified downloads, model-zoo names, and one module per official
format (CAT-Seg, SED, ERR-Seg, CLIP, SAM) with one convert-and-check driver (:mod:`.convert`).
Nothing here imports the models; nothing here changes MMEngine's checkpoint loading (see
:func:`mmseg_escnet.register_checkpoint_loaders`)."""
from .catseg_official import (convert_catseg_checkpoint, convert_catseg_state_dict,
                              map_catseg_key, strip_prefix)
from .convert import (FORMATS, ConversionResult, OfficialFormat, convert_and_check, get_format,
                      register_format)
from .download import (ChecksumError, DownloadError, cache_path, default_cache_dir,
                       download_checkpoint, expected_sha256, file_sha256, load_checkpoint_from_url)
from .model_zoo import (ModelInfo, fetch_weights, get_model, list_models, load_from_model_zoo,
                        resolve_checkpoint_arg)
from .official_checkpoint import Converted
from .safe_loading import checkpoint_file_problem, load_local_checkpoint
from .sed_official import convert_sed_checkpoint
from .state_dict_fit import CheckpointMismatchError, check_state_dict_fits, checkpoint_state_dict

__all__ = [
    'convert_catseg_checkpoint', 'convert_catseg_state_dict', 'map_catseg_key', 'strip_prefix',
    'FORMATS', 'ConversionResult', 'OfficialFormat', 'convert_and_check', 'get_format',
    'register_format', 'Converted', 'convert_sed_checkpoint',
    'ChecksumError', 'DownloadError', 'cache_path', 'default_cache_dir', 'download_checkpoint',
    'expected_sha256', 'file_sha256', 'load_checkpoint_from_url', 'ModelInfo', 'fetch_weights',
    'get_model', 'list_models', 'load_from_model_zoo', 'resolve_checkpoint_arg',
    'checkpoint_file_problem', 'load_local_checkpoint', 'CheckpointMismatchError',
    'check_state_dict_fits', 'checkpoint_state_dict'
]
