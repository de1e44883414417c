"""The shape of the code, pinned: small files and functions, narrow signatures, no private reads
across objects, and the import direction of ARCHITECTURE.md's layers."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = sorted((ROOT / "proxyaug").rglob("*.py"))
BENCHMARKS = sorted((ROOT / "benchmarks").rglob("*.py"))
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80  # lines of code: no blank lines, comments or docstring
MAX_POSITIONAL = 6
# private names of other libraries' objects that we read on purpose
ALLOWED_PRIVATE = {"_orig_mod"}


def _rel(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


def _code_lines(node: ast.AST, source: list) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring
    if not body:
        return 0
    lines = set()
    for stmt in body:
        for n in range(stmt.lineno, stmt.end_lineno + 1):
            text = source[n - 1].strip()
            if text and not text.startswith("#"):
                lines.add(n)
    # nested docstrings and comments are rare enough: a plain count of non-blank, non-comment lines
    return len(lines)


@pytest.mark.parametrize("path", PACKAGE + BENCHMARKS, ids=_rel)
def test_no_file_over_400_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_FILE_LINES, f"{_rel(path)} has {n} lines; split it (one job per file)"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("path", PACKAGE, ids=_rel)
def test_functions_are_short_and_public_ones_take_few_positional_parameters(path):
    source = path.read_text().splitlines()
    tree = ast.parse("\n".join(source))
    for fn in _functions(tree):
        n = _code_lines(fn, source)
        assert n <= MAX_FUNCTION_LINES, f"{_rel(path)}:{fn.lineno} {fn.name}() has {n} lines of code"
        if fn.name.startswith("_"):
            continue
        positional = [a.arg for a in fn.args.posonlyargs + fn.args.args if a.arg not in ("self", "cls")]
        assert len(positional) <= MAX_POSITIONAL, (
            f"{_rel(path)}:{fn.lineno} {fn.name}() takes {len(positional)} positional parameters {positional}; "
            f"make those after the first {MAX_POSITIONAL} keyword-only"
        )


@pytest.mark.parametrize("path", PACKAGE + BENCHMARKS, ids=_rel)
def test_no_module_reads_another_objects_private_names(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue  # a parent class's hook (nn.Module._load_from_state_dict)
            if node.attr in ALLOWED_PRIVATE:
                continue
            if isinstance(owner, ast.Name) and owner.id in ("torch", "sys", "os"):
                continue  # module-level names of the standard library or torch (torch._dynamo, sys._getframe)
            raise AssertionError(f"{_rel(path)}:{node.lineno} reads .{node.attr} of another object")
        if isinstance(node, ast.ImportFrom) and node.module and any(
            part.startswith("_") and not part.startswith("__") for part in node.module.split(".")
        ):
            if node.level == 0 and node.module.startswith("proxyaug"):
                raise AssertionError(f"{_rel(path)}:{node.lineno} imports the private module {node.module}")


LAYERS = {
    # module: modules of proxyaug it must not import (ARCHITECTURE.md, "Never")
    "attention": ("dataset", "_refresh", "bank", "transform"),
    "functional": ("bank", "transform", "dataset", "_refresh", "attention"),
    "bank": ("attention", "transform", "dataset", "_refresh"),
    "transform": ("_refresh", "dataset", "attention"),
    "dataset": ("_refresh",),  # refresh talks to the dataset through the Refreshable protocol, never back
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_import_in_one_direction(layer):
    paths = [p for p in PACKAGE if p.stem == layer or layer in p.relative_to(ROOT / "proxyaug").parts[:-1]]
    assert paths
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                target = (node.module or "").split(".")
                for forbidden in LAYERS[layer]:
                    assert forbidden not in target, f"{_rel(path)}:{node.lineno} ({layer}) imports {node.module}"


def test_the_contributor_page_names_every_file_of_the_package():
    page = (ROOT / "docs" / "contributing.md").read_text()
    for path in PACKAGE:
        if path.name == "__init__.py" or path.parent.name == "integrations":
            continue
        rel = path.relative_to(ROOT / "proxyaug").as_posix()
        assert f"`{rel}`" in page, f"docs/contributing.md does not say what {rel} holds"
