"""The command line shared by ``tools/model_converters/{catseg,sed,errseg,clip}2mmseg.py``.

Each script is ``SRC DST [options] [--debug]`` over :func:`.convert.convert_and_check`; it prints
one line (:meth:`.convert.ConversionResult.report`), and an error is one line on stderr
(:func:`mmseg_escnet.utils.run_cli`; ``--debug`` shows the traceback).
"""
import argparse
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .convert import ConversionResult, convert_and_check, get_format

__all__ = ['converter_parser', 'run_converter', 'converter_entry_points']


def converter_parser(format_name: str, description: str, *,
                     default_config: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of ``SRC DST [--config CONFIG] [--debug]``.

    Args:
        format_name (str): The official format (:data:`.convert.FORMATS`), for the help.
        description (str): What the script does.
        default_config (str, optional): How the config is chosen without ``--config``; None: the
            format is not checked against a config (no ``--config`` option).

    Returns:
        argparse.ArgumentParser: Scripts may add their own options; every option other than
        ``src``, ``dst`` and ``debug`` is passed to :func:`.convert.convert_and_check`.
    """
    model = get_format(format_name).model
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help=f'official {model} weights: local path or http(s) URL')
    parser.add_argument('dst', help='output mmseg checkpoint path')
    if default_config is not None:
        parser.add_argument('--config', default=None,
                            help=f'config to check the weights against (default: '
                            f'{default_config})')
    parser.add_argument('--debug', action='store_true', help='show the traceback of an error')
    return parser


def run_converter(format_name: str, converter: str, parser: argparse.ArgumentParser,
                  argv: Optional[Sequence[str]] = None) -> ConversionResult:
    """Parse ``argv``, convert, check and save, and print the one-line report.

    Args:
        format_name (str): The official format.
        converter (str): The script, recorded as ``meta['converter']``.
        parser (argparse.ArgumentParser): From :func:`converter_parser`.
        argv (Sequence[str], optional): The arguments; ``sys.argv[1:]`` if None.

    Returns:
        ConversionResult: What was written.
    """
    options = vars(parser.parse_args(argv))
    src, dst = options.pop('src'), options.pop('dst')
    options.pop('debug')
    result = convert_and_check(format_name, src, dst, converter=converter, **options)
    print(result.report())
    return result


def converter_entry_points(
        format_name: str, converter: str, description: str, *,
        default_config: Optional[str] = None,
        options: Sequence[Tuple[str, Dict[str, Any]]] = ()) -> Tuple[Callable, Callable]:
    """``convert`` and ``main`` of a converter script.

    Args:
        format_name (str): The official format (:data:`.convert.FORMATS`).
        converter (str): The script, recorded as ``meta['converter']``.
        description (str): What the script does, for ``--help``.
        default_config (str, optional): See :func:`converter_parser`.
        options (Sequence[tuple[str, dict]]): More options of the script: (flag,
            ``add_argument`` keywords); their values go to the format's converter.

    Returns:
        tuple[Callable, Callable]: ``convert(src, dst, config=None, **options) -> meta`` (the
        written ``meta``; errors as :func:`.convert.convert_and_check`) and
        ``main(argv=None)`` (parse, convert, print the one-line report).
    """

    def convert(src: str, dst: str, config: Optional[str] = None, **kwargs: Any) -> Dict:
        return convert_and_check(format_name, src, dst, config, converter=converter,
                                 **kwargs).meta

    def main(argv: Optional[Sequence[str]] = None) -> None:
        parser = converter_parser(format_name, description, default_config=default_config)
        for flag, kwargs in options:
            parser.add_argument(flag, **kwargs)
        run_converter(format_name, converter, parser, argv)

    convert.__doc__ = (f'Convert the {get_format(format_name).model} weights ``src`` into an '
                       'mmseg checkpoint at ``dst``; returns the written ``meta``.')
    main.__doc__ = f'Command line of {converter} (run through ``run_cli``).'
    return convert, main
