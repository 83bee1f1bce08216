"""The metric analysis' pure parts (plugins/module_utils/analysis.py, the filters), no lab: the
conditions, the validation of checks that upgrade.yml runs before any change, placeholders, the
choice of peers. The analysis against a live Prometheus is tests/upgrade/test_analysis.py."""
from __future__ import annotations

import sys

import pytest
import yaml

from labkit import ROOT

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.filter.regions import (  # noqa: E402
    analysis_peers, analysis_targets)
from ansible_collections.icn.super_node.plugins.filter.rollout import (  # noqa: E402
    analysis_column, pending_regions)
from ansible_collections.icn.super_node.plugins.module_utils.analysis import (  # noqa: E402
    Condition, check_problems, fill, median, placeholders_for)

GOOD = {"name": "bw", "query": 'sum(rate(x{namespace="$namespace", pod=~"$pods"}[$window]))',
        "condition": "> 0.8 * baseline", "baseline": "peers", "baseline_floor": 1, "interval": 5,
        "samples": 2}


@pytest.mark.parametrize("text, value, baseline, holds", [
    ("< 1", 0, None, True), ("< 1", 1, None, False), ("<= 1", 1, None, True),
    (">= 1", 1, None, True), ("== 0", 0, None, True), ("!= 0", 0, None, False),
    ("> 0.8 * baseline", 9, 10, True), ("> 0.8 * baseline", 8, 10, False),
    ("<= baseline", 10, 10, True), ("< 1.5e0 * baseline", 14, 10, True),
])
def test_conditions(text, value, baseline, holds):
    assert Condition(text).holds(value, baseline) is holds


@pytest.mark.parametrize("text", ["", "1", "< x", "> 0.8 baseline", "=< 1", "> baseline * 0.8"])
def test_bad_conditions_are_refused(text):
    with pytest.raises(ValueError):
        Condition(text)


def test_the_shipped_checks_are_valid():
    defaults = yaml.safe_load((ROOT / "roles/rollout/defaults/main.yml").read_text())
    assert check_problems(defaults["rollout_analysis"]) == []
    assert [c["name"] for c in defaults["rollout_analysis"]] == [
        "restarts", "ready-ratio", "bandwidth-per-pod", "errors-per-pod", "shards-resynced"]


@pytest.mark.parametrize("change, message", [
    ({"condition": "> 0.8 baseline"}, "rollout_analysis[bw].condition is '> 0.8 baseline'; allowed: OP NUMBER"),
    ({"baseline": "fleet"}, "rollout_analysis[bw].baseline is 'fleet'; allowed: none, peers"),
    ({"baseline": "none"}, "names the baseline, but baseline is none"),
    ({"condition": "< 1"}, "does not name the baseline that baseline: peers reads"),
    ({"query": "up{region=\"$regio\"}"}, "unknown placeholder $regio; allowed: $region"),
    ({"interval": 0}, "rollout_analysis[bw].interval is 0; allowed: a whole number from 1"),
    ({"samples": "3"}, "rollout_analysis[bw].samples is '3'; allowed: a whole number from 1"),
    ({"baseline_floor": -1}, "baseline_floor is -1; allowed: a number from 0"),
    ({"treshold": 1}, "unknown key(s) treshold; allowed: name, query"),
    ({"name": ""}, "rollout_analysis[0].name is missing"),
])
def test_a_bad_check_is_named_with_its_field_and_what_is_allowed(change, message):
    problems = check_problems([{**GOOD, **change}])
    assert any(message in p for p in problems), problems


def test_two_checks_of_one_name_and_a_list_that_is_not_one():
    assert any("used twice" in p for p in check_problems([GOOD, GOOD]))
    assert check_problems("restarts") == [
        "rollout_analysis is str, not a list; allowed: a list of checks (name, query, condition, interval, "
        "samples, baseline)"]
    assert check_problems([GOOD]) == []


def test_placeholders_are_filled_for_each_region():
    query = fill(GOOD["query"], placeholders_for(namespace="icn", pods="icn-super-node-apac-[0-9]+",
                                                 window="20s"))
    assert query == 'sum(rate(x{namespace="icn", pod=~"icn-super-node-apac-[0-9]+"}[20s]))'


def test_median():
    assert median([3.0]) == 3.0 and median([1.0, 5.0, 2.0]) == 2.0 and median([1.0, 2.0, 4.0, 10.0]) == 3.0


def test_peers_are_the_later_regions_still_to_change():
    hostvars = {h: {"super_node_prometheus_url": "http://p:9090", "super_node_plan": {"changed": c}}
                for h, c in (("a", True), ("b", False), ("c", True), ("d", True))}
    hostvars["d"].pop("super_node_prometheus_url")  # no Prometheus: not a peer
    targets = analysis_targets(["a", "b", "c", "d"], hostvars, "icn")
    assert targets[0] == {"name": "a", "host": "a", "namespace": "icn", "statefulset": "icn-super-node-a",
                          "job": "icn-super-node-a-headless", "pods": "icn-super-node-a-[0-9]+",
                          "url": "http://p:9090"}
    assert [t["name"] for t in analysis_peers(targets, "a", hostvars)] == ["c"]
    assert analysis_peers(targets, "c", hostvars) == []


def test_the_summary_column():
    assert analysis_column({"skipped": True, "changed": False}) == "-"
    passed = {"checks": [{"name": "r", "samples": [{"passed": True}] * 2, "passed": True}]}
    assert analysis_column(passed) == "passed 1 checks (2 samples)"
    failed = {"failed": True, "checks": [{"name": "bw", "samples": [{"passed": False}], "passed": False}]}
    assert analysis_column(failed) == "failed: bw"
    assert analysis_column({"stopped": True, "checks": []}) == "stopped: Prometheus unreadable"


def test_durations():
    from ansible_collections.icn.super_node.plugins.module_utils.analysis import duration_seconds
    assert duration_seconds("2m") == 120 and duration_seconds("1h30m") == 5400 and duration_seconds("20s") == 20
    for bad in ("", "2", "m", "2 m", "-1m"):
        with pytest.raises(ValueError):
            duration_seconds(bad)


def test_the_regions_awaiting_a_verdict_are_those_whose_matching_release_is_still_pending():
    plans = [{"changed": False, "analysis_verdict": {"verdict": "pending"}},   # soak cut short
             {"changed": True, "analysis_verdict": {"verdict": "pending"}},    # upgraded again: not judged again
             {"changed": False, "analysis_verdict": {"verdict": "passed"}},
             {"changed": False, "analysis_verdict": None}, None]
    assert pending_regions(plans, ["a", "b", "c", "d", "e"]) == ["a"]
