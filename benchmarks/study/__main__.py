"""``python -m benchmarks.study``."""

from .cli import main

main()
