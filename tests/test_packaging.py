"""What a user gets from a plain `pip install`: the package built from this tree (its wheel, through the
build backend pyproject names) into a fresh virtual environment, run from outside the repo. Its dependencies
come from the environment running the tests (a .pth), so nothing but svctrace is installed; `pipx install .`
builds the same wheel.

Then the kubectl plugin: the real `kubectl` runs the installed `kubectl-svctrace` (and the krew archive's),
and says `kubectl svctrace` in its usage lines; kubectl 1.26+ completes it through
`kubectl_complete-svctrace`. And the krew manifest is a valid krew Plugin manifest for the archive
plugins/krew.py builds.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_completions import bash_complete

import svctrace
from svctrace.model.snapshot import load_snapshot

REPO = Path(__file__).resolve().parents[1]
DEMO = load_snapshot("demo").cluster
KUBECTL = shutil.which("kubectl")
NO_KUBECTL = "kubectl is not installed (.ci/run installs Debian's kubernetes-client when it is missing)"


def clean_env(path_first: list[Path], home: Path) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH (the tree must not be imported), our bin dirs first."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "SVCTRACE_DEBUG", "VIRTUAL_ENV") and not k.startswith("_SVCTRACE")
    }
    env["PATH"] = os.pathsep.join([*map(str, path_first), "/usr/local/bin", "/usr/bin", "/bin"])
    env["HOME"] = str(home)
    env["XDG_CACHE_HOME"] = str(home / ".cache")
    env["KUBECONFIG"] = str(home / "no-kubeconfig")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The bin directory of a fresh venv holding svctrace installed from this tree by pip."""
    root = tmp_path_factory.mktemp("venv")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(REPO)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if p.returncode != 0 and re.search(
        r"(?i)could not find a version that satisfies the requirement hatchling|"
        r"connection|network is unreachable|name resolution",
        p.stderr,
    ):
        pytest.skip(
            f"pip cannot fetch the build backend (hatchling) here: {p.stderr.strip().splitlines()[-1]}"
        )
    assert p.returncode == 0, p.stderr
    # the dependencies: those of the environment running the tests, after the venv's own site-packages
    deps = [d for d in site.getsitepackages() if Path(d).is_dir()]
    (next((venv / "lib").glob("python3*/site-packages")) / "svctrace-test-deps.pth").write_text(
        "\n".join(deps) + "\n"
    )
    yield venv / "bin"


@pytest.mark.slow
def test_pip_install_gives_every_command_the_demo_and_the_metadata(installed: Path, tmp_path: Path) -> None:
    for script in ("svctrace", "kubectl-svctrace", "kubectl_complete-svctrace"):
        assert (installed / script).is_file(), script
    env = clean_env([installed], tmp_path)
    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import svctrace, importlib.metadata as m; "
            "print(svctrace.__file__); md = m.metadata('svctrace'); "
            "print(md['License-Expression']); print(len(md.get_all('Classifier'))); "
            "print(md['Keywords'])",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    file, license_, classifiers, keywords = where.stdout.splitlines()
    assert not Path(file).is_relative_to(REPO), "imported from the tree, not the installed package"
    assert license_ == "Apache-2.0" and int(classifiers) >= 10 and "kube-proxy" in keywords
    # the bundled demo (package data) answers, from a directory outside the repo
    p = subprocess.run(
        [str(installed / "svctrace"), "explain", "svc/web", "--demo", "--from", "pod/client"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 0 and "Service   default/web" in p.stdout and "web-6d4f9c7b8-" in p.stdout, (
        p.stderr
    )


@pytest.mark.slow
def test_completion_works_after_a_plain_pip_install(installed: Path, tmp_path: Path) -> None:
    """No completion file to install: the script calls the installed svctrace back."""
    env = clean_env([installed], tmp_path)
    services = sorted(s.name for s in DEMO.services.values() if s.namespace == "default")
    got = bash_complete("svctrace explain svc/| --demo", env=env, bin_dir=installed)
    assert got == [f"svc/{n}" for n in services]
    assert bash_complete("svctrace explain svc/web --demo --node ", env=env, bin_dir=installed) == list(
        DEMO.nodes
    )


@pytest.mark.slow
@pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL)
def test_kubectl_runs_the_installed_plugin(installed: Path, tmp_path: Path) -> None:
    assert KUBECTL is not None
    env = clean_env([installed], tmp_path)
    listed = subprocess.run([KUBECTL, "plugin", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert str(installed / "kubectl-svctrace") in listed.stdout, listed.stdout + listed.stderr
    helped = subprocess.run(
        [KUBECTL, "svctrace", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert helped.returncode == 0 and "Usage: kubectl svctrace [OPTIONS] COMMAND" in helped.stdout, (
        helped.stderr
    )
    assert "kubectl-svctrace" not in helped.stdout
    sub = subprocess.run(
        [KUBECTL, "svctrace", "explain", "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert "Usage: kubectl svctrace explain [OPTIONS]" in sub.stdout
    via = subprocess.run(
        [KUBECTL, "svctrace", "explain", "svc/web", "--demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    direct = subprocess.run(
        [str(installed / "svctrace"), "explain", "svc/web", "--demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert via.returncode == direct.returncode == 0 and via.stdout == direct.stdout, via.stderr
    assert "Service   default/web" in via.stdout
    # `svctrace --help` run directly still says svctrace
    own = subprocess.run(
        [str(installed / "svctrace"), "--help"], capture_output=True, text=True, env=env, timeout=60
    )
    assert "Usage: svctrace [OPTIONS] COMMAND" in own.stdout


def kubectl_minor() -> int:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "version", "--client", "-o", "yaml"], capture_output=True, text=True, timeout=60
    ).stdout
    m = re.search(r"minor:\s*['\"]?(\d+)", out)
    return int(m.group(1)) if m else 0


@pytest.mark.slow
@pytest.mark.skipif(KUBECTL is None, reason=NO_KUBECTL)
def test_kubectl_completes_the_plugin(installed: Path, tmp_path: Path) -> None:
    if kubectl_minor() < 26:
        pytest.skip(
            f"kubectl 1.{kubectl_minor()} does not complete plugins (kubectl_complete-* came in 1.26)"
        )
    assert KUBECTL is not None
    env = clean_env([installed], tmp_path)
    p = subprocess.run(
        [KUBECTL, "__complete", "svctrace", "explain", "--demo", "svc/w"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    services = sorted(s.name for s in DEMO.services.values() if s.namespace == "default")
    lines = p.stdout.splitlines()
    assert (
        lines[:-1] == [f"svc/{n}" for n in services if f"svc/{n}".startswith("svc/w")] and lines[-1] == ":4"
    ), p.stdout


# -- krew -----------------------------------------------------------------------------------------------


def test_krew_manifest_is_a_valid_plugin_manifest() -> None:
    """krew's rules for a manifest (and the index's: a short description under 50 characters): name = file
    name, semver version with a v, each platform a selector, an https uri, a sha256, `bin`, files' `from`."""
    path = REPO / "plugins" / "svctrace.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "krew.googlecontainertools.github.com/v1alpha2" and doc["kind"] == "Plugin"
    assert doc["metadata"]["name"] == path.stem == "svctrace"
    spec = doc["spec"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", spec["version"])
    assert spec["version"] == f"v{svctrace.__version__}"
    assert spec["shortDescription"] and len(spec["shortDescription"]) < 50 and spec["description"]
    seen = set()
    for p in spec["platforms"]:
        labels = p["selector"]["matchLabels"]
        key = (labels["os"], labels["arch"])
        assert (
            key not in seen and labels["os"] in ("linux", "darwin") and labels["arch"] in ("amd64", "arm64")
        )
        seen.add(key)
        assert p["uri"].startswith("https://") and p["uri"].endswith(
            f"svctrace-krew-{spec['version']}.tar.gz"
        )
        assert re.fullmatch(r"[0-9a-f]{64}", p["sha256"])
        assert p["bin"] == "kubectl-svctrace" and not p["bin"].startswith("/")
        assert {f["from"] for f in p["files"]} == {"kubectl-svctrace", "LICENSE"}
    assert ("linux", "amd64") in seen


@pytest.mark.slow
def test_krew_archive_is_reproducible_and_runs_under_kubectl(tmp_path: Path) -> None:
    """plugins/krew.py: the same tree gives the same archive (so the manifest's sha256 can be written before
    the upload); unpacked as krew does, the real kubectl runs it."""
    out1, out2 = tmp_path / "a", tmp_path / "b"
    for out in (out1, out2):
        p = subprocess.run(
            [
                sys.executable,
                str(REPO / "plugins" / "krew.py"),
                "--out",
                str(out),
                "--manifest",
                str(out / "svctrace.yaml"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
    name = f"svctrace-krew-v{svctrace.__version__}.tar.gz"
    data = (out1 / name).read_bytes()
    assert data == (out2 / name).read_bytes()
    written = yaml.safe_load((out1 / "svctrace.yaml").read_text())
    assert {p["sha256"] for p in written["spec"]["platforms"]} == {hashlib.sha256(data).hexdigest()}
    # the committed manifest is what the script writes, but for the archive's hash (it follows the tree)
    committed = (REPO / "plugins" / "svctrace.yaml").read_text()
    assert re.sub(r"sha256: \w+", "", committed) == re.sub(
        r"sha256: \w+", "", (out1 / "svctrace.yaml").read_text()
    )
    plugin_dir = tmp_path / "krew-bin"
    with tarfile.open(out1 / name) as tf:
        assert sorted(tf.getnames()) == ["LICENSE", "kubectl-svctrace"]
        tf.extractall(plugin_dir, filter="data")
    if KUBECTL is None:
        pytest.skip(NO_KUBECTL)
    # `#!/usr/bin/env python3`: a python3 that has svctrace's dependencies (those running the tests)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shim / "python3").chmod(0o755)
    env = clean_env([shim, plugin_dir], tmp_path)
    p = subprocess.run(
        [KUBECTL, "svctrace", "explain", "svc/web", "--demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert p.returncode == 0 and "Service   default/web" in p.stdout, p.stderr
    p = subprocess.run([KUBECTL, "svctrace", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert "Usage: kubectl svctrace" in p.stdout
