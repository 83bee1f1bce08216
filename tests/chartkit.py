"""What the tests that read the chart without a lab share: the lab's pinned tool versions, the
tools themselves, and the chart rendered by `helm template`.

The Kubernetes version rendered for is $KUBE_VERSION, else the lab's K8S_VERSION: passed
explicitly because a helm built without Helm's release ldflags assumes v1.20, which the chart's
kubeVersion (>= 1.27) rejects. Each distinct set of arguments is rendered once per test run.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "super-node"
# The regions, in order, from the catalogue (the one source; tests/test_one_source.py).
REGIONS = [str(r["name"]) for r in yaml.safe_load((CHART / "regions.yaml").read_text())["regions"]]
NAMESPACE = "icn"
RELEASE = "icn-super-nodes"
TOOLS_CACHE = Path(os.environ.get("ICN_TOOLS_CACHE", Path.home() / ".cache" / "icn-super-node" / "tools"))


@functools.lru_cache(maxsize=None)
def lab_versions() -> dict[str, str]:
    """lab/versions.env: the versions the lab's tools are built at."""
    return dict(re.findall(r"^([A-Z0-9_]+)=(\S+)$", (ROOT / "lab" / "versions.env").read_text(), re.M))


def tool(name: str, cache_dir: str, env: str | None = None) -> str:
    """A tool's path: $env if given and set, else PATH, else the tools cache of
    lab/build-tools.sh (cache_dir, e.g. helm-3.22.0). Fails the test when none is there."""
    cached = TOOLS_CACHE / cache_dir / "bin" / name
    for candidate in (os.environ.get(env) if env else None, shutil.which(name), str(cached)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    build = cache_dir.split("-")[0]
    pytest.fail(f"{name} not found ({'$' + env + ', ' if env else ''}PATH, {cached}): build it with "
                f"`bash lab/build-tools.sh {build}`; the tests that need it are NOT run without it")


KUBE_VERSION = os.environ.get("KUBE_VERSION") or lab_versions()["K8S_VERSION"]


@functools.lru_cache(maxsize=None)
def helm_binary() -> str:
    return tool("helm", f"helm-{lab_versions()['HELM_VERSION']}", env="HELM")


def run_helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)


def template(*args: str, release: str = RELEASE) -> subprocess.CompletedProcess:
    """`helm template` of the chart in namespace icn, for the lab's Kubernetes version."""
    return run_helm("template", release, str(CHART), "--namespace", NAMESPACE,
                    "--kube-version", KUBE_VERSION, *args)


@functools.lru_cache(maxsize=None)
def _render(args: tuple[str, ...], release: str) -> tuple[dict, ...]:
    proc = template(*args, release=release)
    assert proc.returncode == 0, f"helm template {' '.join(args)} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render(*args: str, release: str = RELEASE) -> list[dict]:
    """Objects rendered by `helm template` with these extra arguments (cached)."""
    return list(_render(tuple(args), release))


@functools.lru_cache(maxsize=None)
def render_error(*args: str) -> str:
    """helm's error output for arguments the chart must refuse (cached)."""
    proc = template(*args)
    assert proc.returncode != 0, f"helm template {' '.join(args)} unexpectedly succeeded"
    return proc.stderr


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]
