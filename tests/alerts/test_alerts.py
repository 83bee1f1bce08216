"""The chart's alert rules (templates/prometheusrule.yaml) in a real rule checker: promtool.

No lab: the chart is rendered with `helm template` (the PrometheusRule API announced with --api-versions),
each PrometheusRule's spec.groups is written to a Prometheus rules file, and promtool
- `check rules` loads it (PromQL parses, labels/annotations templates are valid),
- `test rules` runs the unit tests tests/alerts/*.yml: input series per alert, checked minute by
  minute that the alert fires when it should (labels and annotations included) and not when it should not.
Both are shown able to fail: a broken expression is rejected, a wrong expectation fails the unit test.

promtool is built by `bash lab/build-tools.sh prometheus` (the Makefile's `make tools` builds it);
it is taken from $PROMTOOL, else PATH, else the tools cache. Without it these tests FAIL (not skip).
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chartkit import NAMESPACE, REGIONS, ROOT, lab_versions, render, template, tool

HERE = Path(__file__).resolve().parent
REGION = "na-west"  # the unit tests' region
APIS = ("--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
        "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
ALERTS = ["SuperNodeRegionBelowMinReady", "SuperNodePodNotReady", "SuperNodeVolumeFillingUp",
          "SuperNodeHPAAtMaximum", "SuperNodeRegionNotScraped"]
# Rules files the unit tests load (their rule_files), and the helm arguments each is rendered with.
RENDERINGS = {
    "rules.yml": ("--set", f"global.regions={{{REGION}}}"),
    "rules-pdb-50pct.yml": ("--set", f"global.regions={{{REGION}}}",
                            "--set", "podDisruptionBudget.minAvailable=50%"),
}
UNIT_TESTS = sorted(HERE.glob("*.yml"))


@functools.lru_cache(maxsize=None)
def promtool() -> str:
    return tool("promtool", f"prometheus-{lab_versions()['PROMETHEUS_VERSION']}", env="PROMTOOL")


def rule_objects(*args: str) -> list[dict]:
    return [d for d in render(*args) if d["kind"] == "PrometheusRule"]


def rules_file(*args: str) -> dict:
    """A Prometheus rules file made of the groups of every rendered PrometheusRule (a copy: tests edit it)."""
    return copy.deepcopy({"groups": [g for obj in rule_objects(*args) for g in obj["spec"]["groups"]]})


def alerts_of(rules: dict) -> list[dict]:
    return [r for g in rules["groups"] for r in g["rules"]]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    """tmp dir with every rendering of RENDERINGS and a copy of every unit-test file."""
    for name, args in RENDERINGS.items():
        rules = rules_file(*APIS, *args)
        assert rules["groups"], f"no PrometheusRule rendered for {name}"
        (tmp_path / name).write_text(yaml.safe_dump(rules, sort_keys=False))
    for f in UNIT_TESTS:
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


# --------------------------------------------------------------------------- promtool check rules

def test_promtool_is_real():
    proc = run("--version")
    assert proc.returncode == 0, proc.stderr
    assert lab_versions()["PROMETHEUS_VERSION"] in proc.stdout + proc.stderr


@pytest.mark.parametrize("args", [(), ("--set", "podDisruptionBudget.minAvailable=50%"),
                                  ("--set", "metrics.prometheusRule.alerts.regionBelowMinReady.minReady=2")],
                         ids=["all-regions", "pdb-percent", "min-ready-2"])
def test_rules_of_every_region_load_in_promtool(tmp_path, args):
    rules = rules_file(*APIS, *args)
    assert [g["name"] for g in rules["groups"]] == [f"icn-super-node-{r}" for r in REGIONS]
    f = tmp_path / "rules.yml"
    f.write_text(yaml.safe_dump(rules, sort_keys=False))
    proc = run("check", "rules", str(f))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {7 * len(ALERTS)} rules found" in proc.stdout + proc.stderr


def test_a_broken_rule_is_rejected(tmp_path):
    """The check can fail: one unbalanced parenthesis in one expression makes promtool exit 1."""
    rules = rules_file(*APIS, *RENDERINGS["rules.yml"])
    rule = alerts_of(rules)[0]
    rule["expr"] = "(" + rule["expr"]
    f = tmp_path / "broken.yml"
    f.write_text(yaml.safe_dump(rules, sort_keys=False))
    proc = run("check", "rules", str(f))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout + proc.stderr
    assert "parse error" in proc.stdout + proc.stderr


def test_a_broken_annotation_template_is_rejected(tmp_path):
    rules = rules_file(*APIS, *RENDERINGS["rules.yml"])
    alerts_of(rules)[1]["annotations"]["description"] = "{{ $labels.pod "
    f = tmp_path / "broken.yml"
    f.write_text(yaml.safe_dump(rules, sort_keys=False))
    proc = run("check", "rules", str(f))
    assert proc.returncode == 1, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- promtool test rules

@pytest.mark.parametrize("unit", UNIT_TESTS, ids=[f.stem for f in UNIT_TESTS])
def test_alert_unit_tests_pass(workdir, unit):
    proc = run("test", "rules", unit.name, cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_every_alert_is_unit_tested_firing_and_silent():
    """Each alert has at least one case where it fires and one where it must stay silent."""
    fires, silent = set(), set()
    for f in UNIT_TESTS:
        for case in yaml.safe_load(f.read_text())["tests"]:
            for a in case.get("alert_rule_test", []):
                (fires if a["exp_alerts"] else silent).add(a["alertname"])
    assert fires == set(ALERTS), f"no firing case for {set(ALERTS) - fires}"
    assert silent == set(ALERTS), f"no silent case for {set(ALERTS) - silent}"


def test_a_wrong_expectation_fails_the_unit_test(workdir):
    """The unit tests can fail: the same input with the alert expected one minute too early exits 1."""
    doc = yaml.safe_load((HERE / "pod_not_ready.yml").read_text())
    case = doc["tests"][0]
    silent = next(a for a in case["alert_rule_test"] if not a["exp_alerts"])
    firing = next(a for a in case["alert_rule_test"] if a["exp_alerts"])
    silent["exp_alerts"] = firing["exp_alerts"]  # expected firing while it is still pending
    doc["tests"] = [case]
    (workdir / "wrong.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = run("test", "rules", "wrong.yml", cwd=workdir)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout + proc.stderr
    assert "SuperNodePodNotReady" in proc.stdout + proc.stderr


@pytest.mark.parametrize("alert,old,new,unit", [
    ("SuperNodeRegionBelowMinReady", "< 1", "< 2", "region_below_min_ready.yml"),  # 1 Ready of 2 must be fine
    ("SuperNodePodNotReady", " or ", " unless ", "pod_not_ready.yml"),  # Pending pods without a Ready condition
    ("SuperNodeVolumeFillingUp", "> 80", ">= 80", "volume_filling_up.yml"),  # exactly 80% must not fire
    ("SuperNodeHPAAtMaximum", "unless on", "or on", "hpa_at_maximum.yml"),  # min == max must not fire
    ("SuperNodeRegionNotScraped", "== 1)", "== 0)", "region_not_scraped.yml"),  # one target of two up is fine
], ids=lambda v: v if str(v).startswith("SuperNode") else "")
def test_unit_tests_catch_a_changed_expression(workdir, alert, old, new, unit):
    """Each alert's unit tests are load-bearing: a plausible wrong edit of its expression fails them."""
    rules = yaml.safe_load((workdir / "rules.yml").read_text())
    (rule,) = [r for r in alerts_of(rules) if r["alert"] == alert]
    assert old in rule["expr"], rule["expr"]
    rule["expr"] = rule["expr"].replace(old, new)
    (workdir / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    assert run("check", "rules", "rules.yml", cwd=workdir).returncode == 0  # still valid PromQL
    proc = run("test", "rules", unit, cwd=workdir)
    assert proc.returncode == 1, f"{alert} with {new!r} for {old!r} still passes {unit}"
    assert f"alertname: {alert}" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- rendering

RUNBOOKS = ROOT / "docs" / "runbooks"


def test_every_alert_is_actionable():
    """severity, summary, description, and a runbook_url that resolves to the alert's own runbook:
    docs/runbooks/<alert>.md under the default runbookBaseUrl, a file whose heading is the alert."""
    base = yaml.safe_load((ROOT / "charts" / "super-node" / "values.yaml").read_text())[
        "metrics"]["prometheusRule"]["runbookBaseUrl"].rstrip("/")
    rules = rules_file(*APIS, *RENDERINGS["rules.yml"])
    assert [r["alert"] for r in alerts_of(rules)] == ALERTS
    for r in alerts_of(rules):
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert r["labels"]["region"] == REGION
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        url = r["annotations"]["runbook_url"]
        assert url.startswith(base + "/"), url
        runbook = ROOT / url.removeprefix(base + "/")
        assert runbook.parent == RUNBOOKS and runbook.name == f"{r['alert']}.md", url
        assert runbook.is_file(), f"{url}: no runbook {runbook.relative_to(ROOT)}"
        headings = re.findall(r"^# (.+)$", runbook.read_text(), re.M)
        assert headings[:1] == [r["alert"]], f"{runbook.relative_to(ROOT)} is not headed '# {r['alert']}'"


def test_every_runbook_belongs_to_an_alert():
    assert sorted(p.stem for p in RUNBOOKS.glob("*.md")) == sorted(ALERTS)


def test_rules_are_gated_on_the_prometheusrule_api():
    assert rule_objects() == []
    assert rule_objects("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor") == []
    assert len(rule_objects(*APIS)) == 7
    assert rule_objects(*APIS, "--set", "metrics.prometheusRule.enabled=false") == []
    objs = rule_objects("--set", "metrics.prometheusRule.enabled=true",
                        "--set", "metrics.prometheusRule.labels.release=kube-prometheus-stack")
    assert [o["metadata"]["name"] for o in objs] == [f"icn-super-node-{r}" for r in REGIONS]
    assert all(o["metadata"]["namespace"] == NAMESPACE for o in objs)
    assert all(o["metadata"]["labels"]["release"] == "kube-prometheus-stack" for o in objs)


def test_alerts_follow_autoscaling_and_servicemonitor():
    """No HPA alert without an HPA; no scrape alert without the ServiceMonitor that defines the job."""
    region = ("--set", f"global.regions={{{REGION}}}")
    names = lambda *a: [r["alert"] for r in alerts_of(rules_file(*a))]  # noqa: E731
    assert names(*APIS, *region) == ALERTS
    assert "SuperNodeHPAAtMaximum" not in names(*APIS, *region, "--set", "autoscaling.enabled=false")
    assert "SuperNodeRegionNotScraped" not in names(
        "--api-versions", "monitoring.coreos.com/v1/PrometheusRule", *region)
    assert "SuperNodeRegionNotScraped" not in names(
        *APIS, *region, "--set", "metrics.serviceMonitor.enabled=false")


def test_thresholds_and_labels_come_from_values():
    rules = rules_file(*APIS, "--set", f"global.regions={{{REGION}}}",
                       "--set", "metrics.prometheusRule.alerts.volumeFull.thresholdPercent=90",
                       "--set", "metrics.prometheusRule.alerts.hpaAtMax.for=30m",
                       "--set", "metrics.prometheusRule.alerts.regionBelowMinReady.minReady=2",
                       "--set", "metrics.prometheusRule.alertLabels.team=icn-infra",
                       "--set", "metrics.prometheusRule.runbookBaseUrl=https://runbooks.example/icn/")
    by = {r["alert"]: r for r in alerts_of(rules)}
    assert by["SuperNodeVolumeFillingUp"]["expr"].rstrip().endswith("> 90")
    assert by["SuperNodeHPAAtMaximum"]["for"] == "30m"
    assert by["SuperNodeRegionBelowMinReady"]["expr"].rstrip().endswith("< 2")
    assert all(r["labels"]["team"] == "icn-infra" for r in by.values())
    assert all(r["annotations"]["runbook_url"] == f"https://runbooks.example/icn/docs/runbooks/{a}.md"
               for a, r in by.items())


@pytest.mark.parametrize("sets", [
    ("metrics.prometheusRule.alerts.volumeFull.thresholdPercent=100",),
    ("metrics.prometheusRule.alerts.podNotReady.for=5 minutes",),
    ("metrics.prometheusRule.alerts.hpaAtMax.severity=page",),
    ("metrics.prometheusRule.alerts.regionBelowMinReady.minReady=0",),
    ("metrics.prometheusRule.alertz.x=1",),
])
def test_schema_rejects_bad_alert_values(sets):
    args = [a for s in sets for a in ("--set", s)]
    proc = template(*APIS, *args)
    assert proc.returncode != 0, f"{sets} accepted"
    assert "prometheusRule" in proc.stderr, proc.stderr
