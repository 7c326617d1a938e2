"""Exit 0 if every requirement in the given requirements file is installed at a matching version.

Used by tools/setup_env.sh to skip pip (and its index look-ups) on re-runs.
Usage: python tools/misc/requirements_satisfied.py requirements/runtime.txt
"""
import importlib.metadata as metadata
import sys

from packaging.requirements import Requirement


def satisfied(path: str) -> bool:
    with open(path) as f:
        lines = [line.split('#')[0].strip() for line in f]
    for line in filter(None, lines):
        requirement = Requirement(line)
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            return False
        if not requirement.specifier.contains(version, prereleases=True):
            return False
    return True


if __name__ == '__main__':
    sys.exit(0 if satisfied(sys.argv[1]) else 1)
