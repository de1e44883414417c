"""mkdocs hook: publish the committed benchmark results with the site, keep the pages readable on GitHub.

The pages are written to read both on GitHub and on the site:

- Pictures are linked where the benchmark commands wrote them, relative to the page
  (``![...](../benchmarks/results/study/bars.png)``), which GitHub shows. The build adds every
  picture under ``benchmarks/results/`` to the site as ``assets/results/...`` and points the
  pages' links there.
- A generated table or report is copied into the page between two comments that GitHub hides,
  ``<!-- generated: benchmarks/results/speed-cpu.md ... -->`` and
  ``<!-- end generated: benchmarks/results/speed-cpu.md -->``. The build replaces the copy with
  the file as it is; ``python docs/hooks.py`` refreshes the copies in the pages (and
  ``tests/test_docs.py`` fails while one is out of date).
- A code line too long for the page wraps with a hanging indent: each line of a code block is a
  span of its own (``pymdownx.highlight``'s ``line_spans``), and the build gives it its
  indentation (``style="--indent: 4ch"``), from which ``stylesheets/extra.css`` indents the
  continuation lines 4 columns deeper than the line itself.
"""

from __future__ import annotations

import pathlib
import posixpath
import re
import sys
from typing import List

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"

GENERATED = re.compile(
    r"(?P<open><!-- generated: (?P<path>\S+)[^\n]*-->\n)(?P<body>.*?)(?P<close>\n<!-- end generated: (?P=path) -->)",
    re.S,
)
IMAGE = re.compile(r"(?P<head>!\[[^\]]*\]\()(?P<target>[^)\s]+)")
# A code line's span, and the spaces that open the line (raw, or in its first token's span).
CODE_LINE = re.compile(r'<span id="__span-\d+-\d+"(?=>(?:<span class="[^"]*">)?( *))')


def generated_copies(markdown: str) -> List[tuple]:
    """``(path, copy)`` for each generated block of a page, the copy as the page holds it."""
    return [(m.group("path"), m.group("body")) for m in GENERATED.finditer(markdown)]


def source_text(path: str, page_src: str = "index.md") -> str:
    """What a page should hold for the generated file ``path`` (relative to the repository root):
    its text, with relative picture links rebased from the file's folder to the page's
    (``page_src``, the page's path inside ``docs/``), so that they work from the page."""
    text = (ROOT / path).read_text(encoding="utf-8").strip("\n")
    src_dir = (ROOT / path).parent
    page_dir = DOCS / posixpath.dirname(page_src)

    def rebase(m: "re.Match[str]") -> str:
        target = m.group("target")
        if re.match(r"^[a-z]+:|^/|^#", target):  # a URL, an absolute path or an anchor
            return m.group(0)
        return m.group("head") + posixpath.relpath((src_dir / target).resolve().as_posix(), page_dir.resolve().as_posix())

    return IMAGE.sub(rebase, text)


def refresh_copies(markdown: str, page_src: str = "index.md") -> str:
    """The page ``page_src`` with each generated block replaced by its file's current text."""
    return GENERATED.sub(lambda m: m.group("open") + source_text(m.group("path"), page_src) + m.group("close"), markdown)


def publish_pictures(markdown: str, page_src: str) -> str:
    """Point picture links into ``benchmarks/results/`` at their site copies in ``assets/results/``.

    ``page_src`` is the page's path inside ``docs/`` (``results.md``, ``howto/scale.md``).
    """
    page_dir = posixpath.dirname(page_src)

    def repl(m: "re.Match[str]") -> str:
        target = (DOCS / page_dir / m.group("target")).resolve()
        try:
            rel = target.relative_to(RESULTS).as_posix()
        except ValueError:
            return m.group(0)
        return m.group("head") + posixpath.relpath(f"assets/results/{rel}", page_dir or ".")

    return IMAGE.sub(repl, markdown)


def hang_code_lines(html: str) -> str:
    """Give each code line's span its indentation, for the hanging indent of its wrapped part.

    Examples:
        >>> hang_code_lines('<span id="__span-0-2"><span class="w">    </span>x</span>')
        '<span id="__span-0-2" style="--indent: 4ch"><span class="w">    </span>x</span>'
    """
    return CODE_LINE.sub(lambda m: f'{m.group(0)} style="--indent: {len(m.group(1))}ch"', html)


def on_files(files, config):
    from mkdocs.structure.files import File

    for path in sorted(RESULTS.rglob("*.png")):
        rel = path.relative_to(RESULTS).as_posix()
        files.append(File.generated(config, f"assets/results/{rel}", abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    return publish_pictures(refresh_copies(markdown, page.file.src_uri), page.file.src_uri)


def on_page_content(html, page, config, files):
    return hang_code_lines(html)


def main() -> int:
    """Refresh the generated copies in every page under docs/; print the pages that changed."""
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        new = refresh_copies(text, page.relative_to(DOCS).as_posix())
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"updated {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
