"""mkdocs hook: publish the committed benchmark pictures with the site.

The pages show pictures that the benchmark commands wrote under benchmarks/results/; they are
added to the site as assets/results/... at build time instead of being copied into docs/ by hand.
"""

from __future__ import annotations

import pathlib

from mkdocs.structure.files import File, Files

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.rglob("*.png")):
        rel = path.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, f"assets/results/{rel}", abs_src_path=str(path)))
    return files
