"""What `make demo` and `make test` install: only the extras each needs, with visible progress, CPU wheels on request."""

import ast
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make_n(*args, venv):
    """The commands `make` would run (`make -n`), with no settings inherited from an outer make."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VENV", "TORCH_INDEX", "PIP_FLAGS", "PYTHON", "PYTHON_MIN", "ARGS"}}
    out = subprocess.run(["make", "-n", *args, f"VENV={venv}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _pip_lines(commands):
    return [line for line in commands.splitlines() if "-m pip install" in line]


def _extras(pip_line):
    found = re.search(r"-e '\.\[([^\]]*)\]'", pip_line)
    assert found, pip_line
    return set(found.group(1).split(","))


def test_make_demo_installs_the_demo_extra_only(tmp_path):
    (line,) = _pip_lines(_make_n("demo", venv=tmp_path / "venv"))
    assert _extras(line) == {"demo"}
    assert "-c constraints.txt" in line


def test_make_test_installs_the_dev_and_docs_extras(tmp_path):
    (line,) = _pip_lines(_make_n("test", venv=tmp_path / "venv"))
    assert _extras(line) == {"dev", "docs"}


def test_each_set_of_extras_has_its_own_stamp(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".proxyaug-demo").touch()  # `make demo` has installed its extra
    assert not _pip_lines(_make_n("demo", venv=venv))
    (line,) = _pip_lines(_make_n("test", venv=venv))  # `make test` still installs what it adds
    assert _extras(line) == {"dev", "docs"}


def test_torch_index_is_passed_to_pip(tmp_path):
    (line,) = _pip_lines(_make_n("demo", f"TORCH_INDEX={CPU_INDEX}", venv=tmp_path / "venv"))
    assert f"--extra-index-url {CPU_INDEX}" in line
    (line,) = _pip_lines(_make_n("demo", venv=tmp_path / "venv"))
    assert "--extra-index-url" not in line


def test_torch_index_is_documented():
    assert "TORCH_INDEX ?=" in (ROOT / "Makefile").read_text()
    assert f"make demo TORCH_INDEX={CPU_INDEX}" in (ROOT / "README.md").read_text()


def test_install_shows_its_steps_and_pips_progress(tmp_path):
    commands = _make_n("demo", venv=tmp_path / "venv")
    for step in ("[1/3] creating", "[2/3] installing proxyaug[demo]", "[3/3] running the demo"):
        assert step in commands
    (line,) = _pip_lines(commands)
    # -q (and -qq) hide pip's download progress bars; what makes it quieter is only the version check
    assert not re.search(r"\s-q+\b|--quiet", line), line
    assert "--progress-bar on" in line and "--disable-pip-version-check" in line


def _requirements():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower().replace("_", "-")  # noqa: E731
    return {name(r) for r in project["dependencies"]}, {k: {name(r) for r in v} for k, v in project["optional-dependencies"].items()}


def test_the_demo_extra_covers_what_the_demo_imports():
    """Every third-party module the study harness imports for the demo preset is a core or demo requirement."""
    if not hasattr(sys, "stdlib_module_names"):
        pytest.skip("needs Python >= 3.10 (sys.stdlib_module_names)")
    from importlib.metadata import packages_distributions

    core, extras = _requirements()
    demo_config = (ROOT / "benchmarks" / "configs" / "demo.toml").read_text()
    # albumentations serves the cutout arm only, which the demo preset does not run
    not_run = {"albumentations"} if 'kind = "cutout"' not in demo_config else set()
    dists = packages_distributions()
    modules = set()
    # the study harness (benchmarks.train is its alias), wherever its modules live
    files = [ROOT / "benchmarks" / n for n in ("train.py", "data.py", "env.py")] + sorted((ROOT / "benchmarks" / "study").rglob("*.py"))
    for path in files:
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    third_party = modules - set(sys.stdlib_module_names) - {"tomllib", "proxyaug", "benchmarks", "__future__"} - not_run
    assert "sklearn" in third_party and "scipy" in third_party
    for module in sorted(third_party):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        assert names & (core | extras["demo"]), f"benchmarks imports {module} but neither the dependencies nor the demo extra name it"


def test_the_dev_extra_holds_the_demo_extra():
    """`make test` runs the harness' tests and doctests, so it needs everything the demo needs."""
    _, extras = _requirements()
    assert extras["demo"] <= extras["dev"]


def _disk_check(venv, needs_gb):
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "VENV", "NEEDS_GB"}}
    out = subprocess.run(["make", "-s", "disk-check", f"VENV={venv}", f"NEEDS_GB={needs_gb}"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_low_disk_space_is_warned_before_the_first_install(tmp_path):
    venv = tmp_path / "not" / "yet" / "venv"  # its parent need not exist: the nearest one that does is measured
    warning = _disk_check(venv, needs_gb=10**9)
    assert warning.startswith("warning: ") and f"into {venv} needs about {10**9} GB" in warning
    assert str(tmp_path) in warning and "TORCH_INDEX=" in warning
    assert _disk_check(venv, needs_gb=0) == ""
    (venv / "lib" / "python3.11" / "site-packages" / "torch").mkdir(parents=True)  # torch is in: nothing more to fetch
    assert _disk_check(venv, needs_gb=10**9) == ""


def test_the_disk_check_runs_before_pip(tmp_path):
    commands = _make_n("test", venv=tmp_path / "venv").splitlines()
    check = next(i for i, line in enumerate(commands) if "df -Pk" in line)
    assert check < next(i for i, line in enumerate(commands) if "-m pip install" in line)


def _floors():
    """pyproject.toml's ``name>=version`` floors of the package's own dependencies."""
    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9.]+)"', deps))


def test_the_minimum_versions_run_pins_pyprojects_floors():
    """constraints-min.txt (what `make test-min` tests) pins exactly the floors pyproject.toml claims."""
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([0-9.]+)$", (ROOT / "constraints-min.txt").read_text(), re.M))
    assert pins == _floors() and pins["torch"] == "2.5.1"


def test_make_test_min_installs_the_floors_and_runs_the_core_tests(tmp_path):
    commands = _make_n("test-min", f"VENV_MIN={tmp_path / 'min'}", venv=tmp_path / "venv")
    assert "-r constraints-min.txt" in commands and "--no-deps -e ." in commands
    assert f"disk-check VENV={tmp_path / 'min'} NEEDS_GB=6" in commands  # its own disk check, before pip
    assert "tests/test_capture.py" in commands and "tests/test_transform.py" in commands
    assert "make test-min" in (ROOT / ".ci" / "run").read_text()


def test_make_test_min_builds_its_venv_with_the_oldest_python_claimed(tmp_path):
    """.venv-min is made with the Python that PYTHON_MIN names (the oldest claimed, where the machine has it)."""
    floor = re.search(r'^requires-python = ">=([0-9.]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert re.search(rf"^OLDEST_PYTHON := {re.escape(floor)}$", (ROOT / "Makefile").read_text(), re.M)
    commands = _make_n("test-min", f"VENV_MIN={tmp_path / 'min'}", "PYTHON_MIN=/opt/py39/bin/python3.9", venv=tmp_path / "venv")
    assert f"/opt/py39/bin/python3.9 -m venv {tmp_path / 'min'}" in commands
    assert "the minimum-versions tests run on" in commands  # said when that Python is not the oldest claimed
