"""Preparation of the zero-shot benchmarks from their official raw releases.

One module per release; each has a ``main(argv)`` used by ``tools/dataset_converters/``.
"""
