"""Alias of ``python -m benchmarks.study`` (the study was this one module before it became a
package): ``python -m benchmarks.train`` and ``make demo`` run the same command, and its names
stay importable from here."""

from .study import *  # noqa: F401,F403
from .study.cli import main

if __name__ == "__main__":
    main(module="benchmarks.train")
