"""``python -m benchmarks.speed``."""

from .cli import main

main()
