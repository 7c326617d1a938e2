"""Small helpers with no dependency on the rest of the package."""
from .cli import ensure_writable_dir, one_line, positive_int, run_cli, write_json

__all__ = ['ensure_writable_dir', 'one_line', 'positive_int', 'run_cli', 'write_json']
