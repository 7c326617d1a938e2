"""Small helpers with no dependency on the rest of the package."""
from .cli import (add_prompting_arguments, ensure_writable_dir, one_line, positive_int,
                  prompting_overrides, run_cli, write_json)
from .rank_zero import rank_zero_first

__all__ = [
    'add_prompting_arguments', 'ensure_writable_dir', 'one_line', 'positive_int',
    'prompting_overrides', 'rank_zero_first', 'run_cli', 'write_json'
]
