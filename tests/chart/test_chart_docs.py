"""The values table of charts/super-node/README.md is generated from the `# --` comments of
values.yaml by scripts/chart-docs.py (helm-docs' format). No cluster and no helm: the script reads
the two files. It fails when the table is stale or when a value has no `# --` description."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest
import yaml

from chartkit import CHART, ROOT

SCRIPT = ROOT / "scripts" / "chart-docs.py"


def chart_docs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("chart_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def chart_copy(tmp_path):
    shutil.copytree(CHART, tmp_path / "super-node")
    return tmp_path / "super-node"


def test_the_readme_table_is_what_values_yaml_gives():
    proc = chart_docs("--check")
    assert proc.returncode == 0, proc.stderr


def test_every_value_has_a_description(script):
    _, undocumented = script.table()
    assert not undocumented, f"values.yaml: no `# --` description for {undocumented}"


def test_every_leaf_value_is_a_row(script):
    """Each scalar, empty list and empty map is in the table, itself or as part of a described map."""
    generated, _ = script.table()
    keys = [line.split(" | ")[0].removeprefix("| ") for line in generated.splitlines()[2:]]

    def leaves(node, prefix=""):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                yield from leaves(value, path + ".")
            else:
                yield path

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [p for p in leaves(values) if not any(p == k or p.startswith(k + ".") for k in keys)]
    assert not missing, missing


def test_a_stale_table_fails_the_check(chart_copy):
    values = chart_copy / "values.yaml"
    text = values.read_text()
    assert "  # -- Image repository below the registry.\n" in text
    values.write_text(text.replace("  # -- Image repository below the registry.\n",
                                   "  # -- Image repository below the registry, edited.\n"))
    proc = chart_docs("--check", "--chart", str(chart_copy))
    assert proc.returncode == 1
    assert "is stale" in proc.stderr
    # Rewriting makes it current again, with the new text.
    assert chart_docs("--chart", str(chart_copy)).returncode == 0
    assert "Image repository below the registry, edited." in (chart_copy / "README.md").read_text()
    assert chart_docs("--check", "--chart", str(chart_copy)).returncode == 0


def test_a_value_without_description_fails_the_check(chart_copy):
    values = chart_copy / "values.yaml"
    text = values.read_text()
    values.write_text(text.replace("  # -- Image pull policy: IfNotPresent | Always | Never.\n", ""))
    assert chart_docs("--chart", str(chart_copy)).returncode == 1  # rewritten, but still refused
    proc = chart_docs("--check", "--chart", str(chart_copy))
    assert proc.returncode == 1
    assert "values without a `# --` description in values.yaml: image.pullPolicy" in proc.stderr


def test_the_table_follows_helm_docs_format(script):
    """Nested keys as dotted paths, helm-docs' columns, JSON defaults, `@default` overrides, and a
    described map as one row whose undescribed children get none."""
    generated, _ = script.table()
    lines = generated.splitlines()
    assert lines[0] == "| Key | Type | Default | Description |"
    assert "| metrics.serviceMonitor.enabled | string | `\"auto\"` |" in generated
    assert "| autoscaling.maxReplicas | int | `8` |" in generated
    assert "| p2p.bootstrapNodes | list | two `/dns4/bootN.icn.network/tcp/9000/p2p/...`" in generated
    assert any(line.startswith("| podSecurityContext | object | `{") for line in lines)
    assert not any(line.startswith("| podSecurityContext.") for line in lines)
