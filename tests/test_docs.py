"""The documentation: the site builds strictly, its examples run, every public name is documented, the pages read on GitHub."""

import importlib.util
import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest

import proxyaug as pa

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").rglob("*.md"))
# the package and every public module it exports (its other modules are private: a leading underscore)
MODULES = [name for name in pa.__all__ if inspect.ismodule(getattr(pa, name))]
PUBLIC = {"proxyaug": pa, **{name: getattr(pa, name) for name in MODULES}}


def _public_objects():
    for mod_name, mod in PUBLIC.items():
        for name in mod.__all__:
            obj = getattr(mod, name)
            if not name.startswith("__") and (inspect.isclass(obj) or inspect.isfunction(obj)):
                yield f"{mod_name}.{name}", obj


@pytest.mark.parametrize("name, obj", list(_public_objects()), ids=[n for n, _ in _public_objects()])
def test_every_public_name_has_a_runnable_example(name, obj):
    assert "Examples:" in (obj.__doc__ or "") and ">>>" in obj.__doc__, f"{name} has no Examples section"


def test_every_public_name_is_in_the_api_reference():
    api = (ROOT / "docs" / "api.md").read_text()
    documented_modules = set(MODULES)
    assert documented_modules == {"attention", "capture", "functional", "metrics", "mixing", "protocol", "selection", "viz"}
    for name in pa.__all__:
        if name.startswith("__") or name in documented_modules:
            continue
        assert f"proxyaug.{name}" in api, f"proxyaug.{name} is missing from docs/api.md"
    for mod in documented_modules:
        assert f"::: proxyaug.{mod}" in api


def test_getting_started_example_runs(tmp_path):
    page = (ROOT / "docs" / "getting-started.md").read_text()
    code = re.findall(r"```python\n(.*?)```", page, re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("refresh: scanned 1797 (all)") == 2 and "training images carry a map" in out.stdout


def test_site_builds_in_strict_mode(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1",
               PROXYAUG_TORCH_INVENTORY=(ROOT / "docs" / "inventories" / "torch.inv").as_uri())
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert 'id="proxyaug.ProxyDataset"' in api and "https://pytorch.org/docs/stable/tensors.html#torch.Tensor" in api
    speed = (tmp_path / "site" / "speed" / "index.html").read_text()
    assert "Map throughput" in speed  # the generated table was included
    for page, study, grid in (("results", "fashion", "fashion-mnist-cnn-proxy-seed0-refresh1.png"),
                              ("results-digits", "study", "shortcut-digits-cnn-proxy-seed0-refresh1.png")):
        accuracy = (tmp_path / "site" / page / "index.html").read_text()
        assert "Proxy Attention arms against each control" in accuracy  # the study's generated report
        for picture in ("differences.png", "bars.png", f"grids/{grid}"):
            assert (tmp_path / "site" / "assets" / "results" / study / picture).stat().st_size > 0
            assert f'src="../assets/results/{study}/{picture}"' in accuracy
    assert "Winner's curse" in (tmp_path / "site" / "results" / "index.html").read_text()  # the search's copy
    home = (tmp_path / "site" / "index.html").read_text()
    assert 'src="assets/results/study/grids/shortcut-digits-cnn-proxy-black-seed0-refresh1.png"' in home
    assert "stylesheets/extra.css" in home and (tmp_path / "site" / "stylesheets" / "extra.css").is_file()
    scale = (tmp_path / "site" / "howto" / "scale" / "index.html").read_text()
    assert "<td>64</td>" in scale  # the generated ImageNet table
    getting_started = (tmp_path / "site" / "getting-started" / "index.html").read_text()
    assert '<span id="__span-0-1" style="--indent: 0ch">' in getting_started and 'style="--indent: 4ch"' in api  # code lines hang
    for page in (tmp_path / "site").rglob("*.html"):
        assert "--8&lt;--" not in page.read_text() and "--8<--" not in page.read_text(), page


def _python_blocks(page):
    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_no_build_time_include_is_left(page):
    """GitHub shows a `--8<--` include as text; the pages hold a copy of generated files instead."""
    assert not re.search(r"^\s*-+8<-+", page.read_text(), re.M)


def test_generated_copies_match_their_files():
    hooks = _hooks()
    copied = {}
    for page in PAGES:
        for path, copy in hooks.generated_copies(page.read_text()):
            copied[path] = page
            assert copy == hooks.source_text(path, page.relative_to(ROOT / "docs").as_posix()), (
                f"{page.relative_to(ROOT)} holds an old copy of {path}; run `python docs/hooks.py`")
    assert set(copied) >= {"benchmarks/results/study/report.md", "benchmarks/results/speed-cpu.md",
                           "benchmarks/results/scale-imagenet.md"}


@pytest.mark.parametrize("page", PAGES + [ROOT / "README.md"], ids=[p.relative_to(ROOT).as_posix() for p in PAGES + [ROOT / "README.md"]])
def test_picture_links_resolve_relative_to_the_page(page):
    """As GitHub reads them; the docs hook points the site at its own copies."""
    text = page.read_text()
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text) + re.findall(r"<img [^>]*src=\"([^\"]+)\"", text):
        if not target.startswith(("http://", "https://")):
            assert (page.parent / target).is_file(), f"{page.relative_to(ROOT)}: {target} does not exist"
    assert not re.search(r"\)\{[^}]*width=", text), "GitHub shows attribute lists as text; size pictures in docs/stylesheets/extra.css"


def test_hook_points_pictures_at_the_site_copies():
    hooks = _hooks()
    assert hooks.publish_pictures("![a](../benchmarks/results/study/bars.png)", "index.md") == \
        "![a](assets/results/study/bars.png)"
    assert hooks.publish_pictures("![a](../../benchmarks/results/study/bars.png)", "howto/scale.md") == \
        "![a](../assets/results/study/bars.png)"
    assert hooks.publish_pictures("![a](https://example.org/a.png)", "index.md") == "![a](https://example.org/a.png)"


def test_code_lines_carry_their_indentation_for_the_hanging_indent():
    import markdown

    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"- pymdownx\.highlight:\s*\n\s+line_spans: __span\b", config)
    md = markdown.Markdown(extensions=["pymdownx.highlight", "pymdownx.superfences"],
                           extension_configs={"pymdownx.highlight": {"line_spans": "__span"}})
    html = _hooks().hang_code_lines(md.convert('```python\ndef f(x):\n    """doc\n      string"""\n    return x  # why\n```'))
    assert re.findall(r'<span id="__span-0-\d+" style="--indent: (\d+)ch">', html) == ["0", "4", "6", "4"]
    css = (ROOT / "docs" / "stylesheets" / "extra.css").read_text()
    rule = re.search(r'\.md-typeset pre > code > span\[id\^="__span-"\] \{([^}]*)\}', css).group(1)
    assert "padding-left: calc(var(--indent, 0ch) + 4ch)" in rule and "text-indent: calc(-1 * (var(--indent, 0ch) + 4ch))" in rule
    assert "display: inline-block" in rule  # a block box would double the newlines of a copied block


def test_extra_css_wraps_code_and_table_cells():
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^extra_css:\s*\n\s*- stylesheets/extra\.css\s*$", config, re.M)
    css = (ROOT / "docs" / "stylesheets" / "extra.css").read_text()
    rules = {sel.strip(): body for sel, body in re.findall(r"([^{}]+)\{([^}]*)\}", re.sub(r"/\*.*?\*/", "", css, flags=re.S))}
    assert "white-space: pre-wrap" in rules[".md-typeset pre > code"]
    assert "word-break: normal" in rules[".md-typeset table:not([class]) code"]
    assert "anywhere" not in css and "break-all" not in css


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_python_blocks_compile(page):
    for code in _python_blocks(page):
        compile(code, str(page), "exec")


def test_own_dataset_blocks_import_what_they_use():
    """Each block of the page runs as it stands: no name is used that the block does not define or import."""
    pytest.importorskip("ruff")
    page = ROOT / "docs" / "howto" / "own-dataset.md"
    for code in _python_blocks(page):
        out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--select", "F821", "--stdin-filename", "block.py", "-"],
                             input=code, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


def test_models_layer_example_runs():
    """The layer names of the example are those torchvision's and timm's models have."""
    import torch

    pytest.importorskip("timm")
    page = ROOT / "docs" / "howto" / "models.md"
    (code,) = [c for c in _python_blocks(page) if "layer=" in c and "convnext" in c]
    torch.manual_seed(0)
    exec(compile(code, str(page), "exec"), {"x": torch.rand(2, 3, 64, 64)})


def test_models_transformer_example_runs():
    """The transformer-native example runs as printed, on a ViT's own block names."""
    import torch

    import proxyaug as pa

    pytest.importorskip("timm")
    page = ROOT / "docs" / "howto" / "models.md"
    (code,) = [c for c in _python_blocks(page) if "rollout" in c]
    torch.manual_seed(0)
    x = torch.rand(2, 3, 224, 224)
    ds = pa.ProxyDataset(torch.utils.data.TensorDataset(x, torch.tensor([1, 2])))
    exec(compile(code, str(page), "exec"), {"x": x, "y": torch.tensor([1, 2]), "ds": ds, "pa": pa, "timm": __import__("timm")})


def test_no_schedule_in_the_docs_refreshes_after_its_last_epoch():
    """Maps written after the last epoch are never trained on."""
    found = 0
    for page in PAGES + [ROOT / "README.md"]:
        for spec in re.findall(r"ProxySchedule\.parse\(\"([^\"]+)\"\)", page.read_text()):
            schedule = pa.ProxySchedule.parse(spec)
            assert max(schedule.refresh_epochs) < schedule.epochs - 1, f"{page.name}: {spec}"
            found += 1
    assert found >= 3


def _api_calls(code, types):
    """``(object, name, keywords, line)`` of every call of a ``pa.`` name in a block, and of a method of an
    object the page made with one (``ds = pa.ProxyDataset(...)``, then ``ds.observe(...)``); ``types`` maps
    those variables to their classes across the page's blocks."""
    import ast

    tree = ast.parse(code)
    for node in ast.walk(tree):  # the variables a block makes from a class of the package
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and len(node.targets) == 1:
            target, owner = node.targets[0], _resolve(node.value.func, {})
            if isinstance(target, ast.Name) and inspect.isclass(owner):
                types[target.id] = owner
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            obj = _resolve(node.func, types)
            if obj is not None:
                yield obj, ast.unparse(node.func), [k.arg for k in node.keywords if k.arg], node.lineno


def _resolve(func, types):
    """What ``func`` (``pa.a.b`` or ``var.method``) names in the package, ``None`` if it is not ours;
    a missing attribute raises ``AttributeError`` with its dotted name."""
    import ast

    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    if func.id in ("pa", "proxyaug"):
        obj = pa
    elif func.id in types and len(parts) == 1:  # a method (attributes set in __init__ are not the class's)
        obj = types[func.id]
    else:
        return None
    for part in reversed(parts):
        if not hasattr(obj, part):
            raise AttributeError(f"{func.id}.{'.'.join(reversed(parts))}: {getattr(obj, '__name__', obj)} has no {part!r}")
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("page", PAGES + [ROOT / "README.md"], ids=[p.relative_to(ROOT).as_posix() for p in PAGES + [ROOT / "README.md"]])
def test_every_proxyaug_call_in_the_docs_exists_and_takes_its_keywords(page):
    """The code on a page says what the package takes: a renamed function or method, or a removed
    keyword, fails here (``ds.refresh(model, method=...)`` after 0.2 did)."""
    types = {}
    for code in _python_blocks(page):
        try:
            calls = list(_api_calls(code, types))
        except AttributeError as err:
            raise AssertionError(f"{page.name}: {err}") from None
        for obj, name, keywords, line in calls:
            if not callable(obj):
                continue
            try:
                params = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters
            except (TypeError, ValueError):
                continue
            if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                continue
            unknown = sorted(set(keywords) - set(params))
            assert not unknown, f"{page.name}: {name}(...) (block line {line}) passes {unknown}, which it does not take"


def test_the_docs_call_check_catches_a_stale_call():
    types = {}
    with pytest.raises(AttributeError, match=r"ds.refresh: ProxyDataset has no 'refresh'"):
        list(_api_calls("ds = pa.ProxyDataset(train_set)\nds.refresh(model)", types))
    ((_, name, keywords, _),) = list(_api_calls("pa.refresh(model, ds, method='gradcam')", {}))
    assert name == "pa.refresh" and keywords == ["method"]


def test_the_readme_loop_runs_as_printed(tmp_path):
    """The README's plain loop, unchanged, on a small dataset, model and optimizer of its own."""
    import torch
    from torch import nn

    (code,) = [c for c in _python_blocks(ROOT / "README.md") if "for epoch in range(schedule.epochs)" in c]
    g = torch.Generator().manual_seed(0)
    train_set = torch.utils.data.TensorDataset(torch.rand(64, 3, 16, 16, generator=g), torch.randint(0, 3, (64,), generator=g))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    namespace = {"train_set": train_set, "model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1)}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["ds"].refreshes == 3 and namespace["ds"].bank.present.any()
