"""The documentation: the site builds strictly, its example runs, every public name is documented."""

import inspect
import os
import pathlib
import re
import subprocess
import sys

import pytest

import proxyaug as pa

ROOT = pathlib.Path(__file__).resolve().parent.parent
PUBLIC = {
    "proxyaug": pa, "functional": pa.functional, "selection": pa.selection, "attention": pa.attention, "viz": pa.viz,
    "distributed": pa.distributed,
}


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
    documented_modules = {"functional", "selection", "attention", "viz", "distributed"}
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
    accuracy = (tmp_path / "site" / "results" / "index.html").read_text()
    assert "Proxy Attention arms against each control" in accuracy  # the study's generated report
    for picture in ("differences.png", "bars.png", "grids/shortcut-digits-cnn-proxy-seed0-refresh1.png"):
        assert (tmp_path / "site" / "assets" / "results" / "study" / picture).stat().st_size > 0
