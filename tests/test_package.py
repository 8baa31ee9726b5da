"""Packaging: the device install carries the runtime only, the wheel ships its data, constraints files resolve.

Three layers, cheapest first: imports and metadata checked in this interpreter (offline, seconds); each
``constraints/*.txt`` resolved by pip for its aarch64 target; the built wheel installed without extras into a fresh
venv and run there (``slow``, about 90 s with a warm pip cache, mostly numba compiling the demo's kernels). The last
two need the package index and skip with the reason when it does not answer.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import ssl
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints"
# Host tooling that the device install must not carry: the export extra (onnx, onnxslim, and onnxslim's sympy)
# and the train extra.
HOST_ONLY = ("onnx", "onnxslim", "sympy", "torch")
# Deployment target of each constraints file: CPython version and the target's glibc minor version (the newest
# manylinux_2_X tag its pip accepts): JetPack 6 is Ubuntu 22.04 (glibc 2.35), Raspberry Pi OS Bookworm is
# Debian 12 (glibc 2.36).
TARGETS = {"jetpack6.txt": ("3.10", 35), "pi5.txt": ("3.11", 36)}
EXPORT_HINT = "pip install 'edgehdr[export]'"
NEURAL_REMEDY = "runtime stages must read model metadata through edgehdr.infer.ort.model_metadata"
EXPORT_REMEDY = f"export.cli.main should check for onnx first and exit 2 with: {EXPORT_HINT}"
# Imports of HOST_ONLY packages fail as if they were not installed, with the host's copies still on disk.
BLOCK_HOST_ONLY = textwrap.dedent(f"""
    import sys

    class _HostOnly:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {HOST_ONLY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

    sys.meta_path.insert(0, _HostOnly())
""")


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: tomli is a core dependency there
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _name(requirement: str) -> str:
    """Canonical project name of a PEP 508 requirement (``OpenEXR>=3.3`` -> ``openexr``)."""
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)).lower()


def _run_blocked(code: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_HOST_ONLY + code], check=False, capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def _xfail_if_it_needs_onnx(result: subprocess.CompletedProcess, what: str, remedy: str) -> None:
    """A known gap (a path that still imports onnx without the export extra) is reported as xfail naming the
    importing file; any other failure stays a failure."""
    text = result.stdout + result.stderr
    if result.returncode != 0 and re.search(r"No module named '(onnx|onnxslim)'", text):
        files = re.findall(r'File "([^"]+)", line (\d+)', text)
        where = next((f"{Path(f).parent.name}/{Path(f).name}:{n}" for f, n in reversed(files)
                      if "site-packages" in f or str(ROOT) in f), "a runtime module")
        pytest.xfail(f"{what} imports onnx at run time ({where}); {remedy}")


# --- offline checks ----------------------------------------------------------------------------------------------


def test_imports_without_optional_extras():
    code = (
        "import sys, edgehdr, export, firmware_bridge, edgehdr.io, edgehdr.hdr, edgehdr.synth, "
        "edgehdr.tonemap, edgehdr.quality, edgehdr.cli, firmware_bridge.link, firmware_bridge.simulator\n"
        "heavy = [m for m in ('tensorrt', 'pycuda', 'torch', 'picamera2', 'serial', 'spidev', 'onnx', 'onnxslim', "
        "'sympy') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"optional modules imported eagerly: {out.stdout}"


def test_console_script_reports_version():
    from edgehdr import __version__

    out = subprocess.run([sys.executable, "-m", "edgehdr.cli", "--version"], check=False, capture_output=True,
                         text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"edgehdr {__version__}"


def test_core_dependencies_leave_host_tooling_to_extras():
    project = _pyproject()["project"]
    core = {_name(r) for r in project["dependencies"]}
    assert not core & set(HOST_ONLY), f"host tooling in the core install: {sorted(core & set(HOST_ONLY))}"
    assert {"numpy", "opencv-python-headless", "simplejpeg", "numba", "openexr", "pillow", "onnxruntime", "cobs",
            "pyserial", "threadpoolctl"} <= core
    extras = project["optional-dependencies"]
    assert {_name(r) for r in extras["export"]} >= {"onnx", "onnxslim"}
    # the README's `pip install -e ".[test]"` must bring everything the suite imports, the export tools included
    assert "edgehdr[export]" in extras["test"]
    assert {_name(r) for r in extras["spi"]} == {"spidev"}


def test_every_runtime_module_imports_without_host_tooling(tmp_path):
    """Imports every module of edgehdr (training recipes aside) and firmware_bridge with onnx, onnxslim, sympy
    and torch unavailable."""
    code = textwrap.dedent("""
        import importlib, pkgutil
        import edgehdr, firmware_bridge

        failed = []
        for package in (edgehdr, firmware_bridge):
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                if info.name.startswith("edgehdr.models.training"):
                    continue
                try:
                    importlib.import_module(info.name)
                except ModuleNotFoundError as exc:
                    failed.append(f"{info.name}: {exc}")
        print("\\n".join(failed))
    """)
    out = _run_blocked(code, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "", f"runtime modules that need host tooling at import:\n{out.stdout}"


def test_neural_demo_runs_without_host_tooling(tmp_path):
    out = _run_blocked("from edgehdr.cli import main\n"
                       f"sys.exit(main(['demo', '--neural', '--seconds', '1', '-o', {str(tmp_path / 'out')!r}]))",
                       tmp_path)
    _xfail_if_it_needs_onnx(out, "edgehdr demo --neural", NEURAL_REMEDY)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "out" / "stats.json").is_file()


def test_export_cli_without_the_extra_says_what_to_install(tmp_path):
    model = ROOT / "edgehdr" / "models" / "tmo_net.onnx"
    out = _run_blocked(f"from export.cli import main\nsys.exit(main(['inspect', {str(model)!r}]))", tmp_path)
    if "Traceback" in out.stderr:
        _xfail_if_it_needs_onnx(out, "edgehdr-export without the export extra", EXPORT_REMEDY)
    assert out.returncode == 2, out.stderr[-3000:]
    assert EXPORT_HINT in out.stderr
    assert "Traceback" not in out.stderr


# --- the package index -------------------------------------------------------------------------------------------


@functools.cache
def _index_unreachable() -> str | None:
    """Why pip's package index cannot be reached from here, or None when it answers (an HTTP request for one
    small project page; a bare socket check is not enough behind transparent proxies)."""
    if os.environ.get("PIP_NO_INDEX", "").lower() in ("1", "true", "yes", "on"):
        return "PIP_NO_INDEX is set"
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], check=False, capture_output=True,
                                 text=True)
        found = re.findall(r"^[^\n=]*\.index-url='([^']+)'", listing.stdout, flags=re.MULTILINE)
        url = found[-1] if found else "https://pypi.org/simple"
    if url.startswith("file:"):
        path = Path(urllib.request.url2pathname(url[len("file:"):]))
        return None if path.is_dir() else f"the package index {url} does not exist"
    page = url.rstrip("/") + "/cobs/"
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    try:
        with urllib.request.urlopen(page, timeout=10, context=context) as response:
            response.read(1)
    except urllib.error.HTTPError:
        return None  # the index answered; a missing page is for pip to report
    except (OSError, ValueError) as exc:
        return f"the package index {url} does not answer ({exc})"
    return None


def _needs_index(why: str) -> None:
    reason = _index_unreachable()
    if reason:
        pytest.skip(f"{why} needs the package index: {reason}")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"{path.name}: {line!r} is not an exact pin (NAME==VERSION)"
            pins[_name(name)] = version.strip()
    return pins


def _requirements(extras=()) -> list[str]:
    """The core dependencies plus those of ``extras``, the project's references to its own extras expanded."""
    project = _pyproject()["project"]
    out, todo, seen = list(project["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            if _name(text) == "edgehdr":
                todo += [e.strip() for e in text[text.index("[") + 1:text.index("]")].split(",")]
            else:
                out.append(text)
    return out


def test_every_constraints_file_has_a_target():
    assert sorted(p.name for p in CONSTRAINTS.glob("*.txt")) == sorted(TARGETS)


# The export extra is resolved for the Jetson too: engines are built on the device that runs them.
@pytest.mark.parametrize(("name", "extras"), [("jetpack6.txt", ()), ("jetpack6.txt", ("export",)),
                                              ("pi5.txt", ())])
def test_constraints_resolve_for_their_target(name, extras, tmp_path):
    """pip resolves the core dependencies (and ``extras``) with the constraints file for the target's platform,
    wheels only (nothing may compile on the device), and every pin is part of the resolved set."""
    _needs_index(f"resolving constraints/{name}")
    requirement = pytest.importorskip("packaging.requirements")
    python_version, glibc_minor = TARGETS[name]
    # pip evaluates environment markers against the running interpreter even with --python-version, so the
    # target's markers (tomli on 3.10) are evaluated here.
    target_env = {"python_version": python_version, "python_full_version": f"{python_version}.0",
                  "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64",
                  "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    requirements = []
    for text in _requirements(extras):
        req = requirement.Requirement(text)
        if req.marker is None or req.marker.evaluate(target_env):
            req.marker = None
            requirements.append(str(req))
    # pip does not widen a manylinux_2_X platform to the older tags the target also runs, so list them all
    platforms = [f"--platform=manylinux_2_{minor}_aarch64" for minor in range(glibc_minor, 16, -1)]
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--only-binary=:all:",
           *platforms, "--platform=manylinux2014_aarch64", f"--python-version={python_version}",
           "--implementation=cp", f"--target={tmp_path / 'target'}", f"--report={report}", "--quiet",
           "-c", str(CONSTRAINTS / name), *requirements]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    running = ".".join(map(str, sys.version_info[:3]))
    if out.returncode != 0 and f"requires a different Python: {running} not in" in out.stderr:
        import pip

        pytest.skip(f"pip {pip.__version__} checks Requires-Python against this interpreter ({running}) instead of "
                    f"--python-version={python_version} (pip 24.2 and later do not): run with a newer pip")
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stderr[-4000:]}"

    import json

    installs = json.loads(report.read_text())["install"]
    resolved = {_name(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}
    # Older pip applies Requires-Python to the running interpreter, not the target: checked here for the target.
    specifiers = pytest.importorskip("packaging.specifiers")
    wrong_python = {item["metadata"]["name"]: item["metadata"]["requires_python"] for item in installs
                    if item["metadata"].get("requires_python") and f"{python_version}.0" not in
                    specifiers.SpecifierSet(item["metadata"]["requires_python"])}
    assert not wrong_python, f"{name}: pins that do not support Python {python_version}: {wrong_python}"
    pins = _pins(CONSTRAINTS / name)
    stale = sorted(set(pins) - set(resolved))
    assert not stale, f"{name} pins packages the core install no longer uses: {stale}"
    assert {k: resolved[k] for k in pins} == pins
    assert resolved["numpy"].startswith("1."), "the targets' system bindings are built against numpy 1.x"
    if not extras:
        assert not {"onnx", "onnxslim", "torch"} & set(resolved)


# --- the wheel, installed without extras into a fresh venv ---------------------------------------------------------


def _clean_env() -> dict[str, str]:
    """This environment without what would let the venv see the source tree or the host's site-packages."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONUSERBASE")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the tree (no build outputs land in the checkout)."""
    _needs_index("building the wheel (setuptools, wheel)")
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for item in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / item, src / item)
    for package in ("edgehdr", "export", "firmware_bridge"):
        shutil.copytree(ROOT / package, src / package, ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(src)],
                         check=False, capture_output=True, text=True, timeout=900, env=_clean_env())
    assert out.returncode == 0, out.stderr[-4000:]
    (built,) = dist.glob("edgehdr-*.whl")
    return built


@pytest.fixture(scope="module")
def core_venv(wheel, tmp_path_factory) -> Path:
    """A venv without system site-packages holding the wheel installed with no extras; returns its bin folder."""
    venv = tmp_path_factory.mktemp("venv") / "core"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    out = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
                         check=False, capture_output=True, text=True, timeout=1800, env=_clean_env())
    assert out.returncode == 0, out.stderr[-4000:]
    return bin_dir


def _in_venv(bin_dir: Path, *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], check=False, capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=_clean_env())


@pytest.mark.slow
def test_wheel_ships_models_c_sources_and_firmware(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for pattern in ("firmware_bridge/c/*", "firmware_bridge/firmware/*", "firmware_bridge/vectors/*.txt",
                    "firmware_bridge/PROTOCOL.md", "edgehdr/models/*.onnx", "edgehdr/models/*.onnx.manifest.json",
                    "edgehdr/deploy/*", "*/py.typed"):
        expected |= {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern) if p.is_file()}
    assert any(name.endswith(".c") for name in expected) and any(".onnx" in name for name in expected)
    missing = sorted(expected - names)
    assert not missing, f"not in {wheel.name}: {missing}"


@pytest.mark.slow
def test_core_install_carries_no_host_tooling(core_venv, tmp_path):
    code = ("import importlib.util, importlib.metadata, edgehdr; print(edgehdr.__file__); "
            f"print(','.join(m for m in {HOST_ONLY!r} if importlib.util.find_spec(m))); "
            "print(importlib.metadata.version('onnxruntime'))")
    out = _in_venv(core_venv, "python", "-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    location, present, onnxruntime = out.stdout.splitlines()
    assert Path(location).resolve().is_relative_to(core_venv.parent.resolve()), "edgehdr not imported from the venv"
    found = set(filter(None, present.split(",")))
    if tuple(int(v) for v in onnxruntime.split(".")[:2]) < (1, 24):
        # onnxruntime before 1.24 depends on sympy itself (the last release for Python 3.10 is 1.23, as on JetPack 6)
        found.discard("sympy")
    assert not found, f"installed by `pip install edgehdr`: {sorted(found)}"


@pytest.mark.slow
def test_core_install_runs_the_demo(core_venv, tmp_path):
    out = _in_venv(core_venv, "edgehdr", "demo", "--seconds", "2", "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert {"stats.json", "contact_sheet.png"} <= {p.name for p in (tmp_path / "out").iterdir()}


@pytest.mark.slow
def test_core_install_runs_the_neural_demo(core_venv, tmp_path):
    out = _in_venv(core_venv, "edgehdr", "demo", "--neural", "--seconds", "2", "-o", str(tmp_path / "out"),
                   cwd=tmp_path)
    _xfail_if_it_needs_onnx(out, "edgehdr demo --neural", NEURAL_REMEDY)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "out" / "stats.json").is_file()


@pytest.mark.slow
def test_core_install_export_cli_says_what_to_install(core_venv, tmp_path):
    model = ROOT / "edgehdr" / "models" / "tmo_net.onnx"
    out = _in_venv(core_venv, "edgehdr-export", "inspect", str(model), cwd=tmp_path)
    if "Traceback" in out.stderr:
        _xfail_if_it_needs_onnx(out, "edgehdr-export without the export extra", EXPORT_REMEDY)
    assert out.returncode == 2, out.stderr[-3000:]
    assert EXPORT_HINT in out.stderr
