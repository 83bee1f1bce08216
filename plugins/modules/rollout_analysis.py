#!/usr/bin/python
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollout_analysis
short_description: Judge a region on its metrics, against its peers, and gate on the fleet's alerts
version_added: "0.3.0"
description:
  - O(mode=list) fills in each check's placeholders for O(region) and its O(peers) and returns the
    queries, reading nothing (upgrade.yml's plan, and C(--check)). Bad checks fail here, naming the field.
  - O(mode=gate) (before a region is touched) fails when an alert of O(alerts) fires in any region of
    O(fleet), and runs each check's query once against the region's Prometheus, so that a query
    Prometheus rejects stops the rollout before the region changes.
  - O(mode=soak) (after the region's upgrade) samples every check every C(interval) seconds until each
    has C(samples) passing samples, and polls the fleet's alerts meanwhile. A sample that breaks its
    condition, or a firing alert, fails the task (the role rolls the region back) with the query, the
    value, the condition and the baseline in the message. A sample with no data is not counted.
  - Prometheus unreachable (after O(api_grace) seconds of retries) - with O(on_error=stop) the result
    has C(stopped) and the task does not fail, so that the role stops the rollout without rolling back
    a region that Kubernetes found healthy; with O(on_error=pass) the result has C(skipped) and a warning.
  - See plugins/module_utils/analysis.py for the checks, the placeholders and the peer baseline.
author: ICN infrastructure team
options:
  mode:
    description: What to do.
    type: str
    choices: [list, gate, soak]
    required: true
  region:
    description: The region under analysis, C(name), C(url) (its Prometheus), C(namespace),
      C(statefulset), C(job) (the ServiceMonitor's job), C(pods) (a regex of its pods).
    type: dict
    required: true
  peers:
    description: The regions still on the old release, in the same shape as O(region).
    type: list
    elements: dict
    default: []
  fleet:
    description: Every region of the run (C(name), C(url)), whose alerts gate the rollout.
    type: list
    elements: dict
    default: []
  alerts:
    description: Names of the alerts that stop the rollout when one fires for the namespace of O(region).
    type: list
    elements: str
    default: []
  checks:
    description: The checks (C(name), C(query), C(condition), C(interval), C(samples), C(baseline),
      C(baseline_floor)).
    type: list
    elements: dict
    default: []
  window:
    description: The value of the C($window) placeholder (a PromQL duration).
    type: str
    default: 2m
  interval:
    description: Seconds between two samples of a check that sets no C(interval).
    type: int
    default: 15
  samples:
    description: Passing samples a check needs when it sets no C(samples).
    type: int
    default: 4
  started:
    description: Epoch seconds when the region's upgrade started; with no peer left, a C(baseline=peers)
      check compares with the region's own value at that time.
    type: float
  rolled_out:
    description: Epoch seconds when the region's rollout completed, for a region judged on a later run than
      the one that upgraded it (its soak was cut short); O(delay) counts from it. Default, the soak's start.
    type: float
  delay:
    description: Seconds after the region's rollout before the first sample, so that the window of every
      rate holds only what was scraped after the rollout - at least O(window), plus a scrape interval.
    type: int
    default: 150
  timeout:
    description: Seconds the soak may take until every check has its samples (after O(delay)).
    type: int
    default: 600
  alert_interval:
    description: Seconds between two reads of the fleet's alerts during the soak.
    type: int
    default: 10
  on_error:
    description: What an unreachable Prometheus does.
    type: str
    choices: [stop, pass]
    default: stop
  request_timeout:
    description: Seconds one request to Prometheus may take.
    type: float
    default: 10
  api_grace:
    description: Seconds a Prometheus may fail (no answer, 429, 5xx) before it counts as unreachable.
    type: float
    default: 30
"""

EXAMPLES = r"""
- name: Soak the region on its metrics
  icn.super_node.rollout_analysis:
    mode: soak
    region: {name: eu-west, url: "http://prometheus.eu-west:9090", namespace: icn,
             statefulset: icn-super-node-eu-west, job: icn-super-node-eu-west-headless,
             pods: "icn-super-node-eu-west-[0-9]+"}
    checks: "{{ rollout_analysis }}"
"""

RETURN = r"""
checks:
  description: Per check C(name), C(query) (filled in), C(condition), C(baseline) (none, peers, or
    C(self before the upgrade) when no peer was left), C(peer_regions), C(samples) (each C(value),
    C(baseline), C(threshold), C(passed)), C(passed).
  type: list
  returned: always
alerts_firing:
  description: The firing alerts that stopped the rollout (labels, annotations).
  type: list
  returned: always
at:
  description: O(mode=gate) the time of the gate (epoch seconds), the O(started) of the soak after it.
  type: float
  returned: modes gate and soak
rolled_out:
  description: O(mode=soak) when the region's rollout completed (O(rolled_out), or the soak's start), from
    which O(delay) counted; recorded when the soak is cut short, for the run that judges the region.
  type: float
  returned: mode soak
stopped:
  description: Prometheus could not be read and O(on_error=stop), so the role stops the rollout.
  type: bool
  returned: always
skipped:
  description: Prometheus could not be read and O(on_error=pass).
  type: bool
  returned: always
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.icn.super_node.plugins.module_utils.analysis import (
    AnalysisError, Condition, Prometheus, QueryError, check_problems, describe_alerts, duration_seconds, fill,
    median,
    placeholders_for)


def placeholders(target, window):
    return placeholders_for(region=target["name"], namespace=target["namespace"],
                            statefulset=target["statefulset"], pods=target["pods"], job=target["job"],
                            window=window)


class Check:
    def __init__(self, spec, region, peers, window, interval, samples):
        self.name = spec["name"]
        self.query = fill(spec["query"], placeholders(region, window))
        self.condition = Condition(spec["condition"])
        self.baseline = spec.get("baseline", "none")
        self.floor = float(spec.get("baseline_floor", 0))
        self.interval = spec.get("interval", interval)
        self.needed = spec.get("samples", samples)
        self.peers = peers if self.baseline == "peers" else []
        self.peer_queries = [(p, fill(spec["query"], placeholders(p, window))) for p in self.peers]
        self.samples = []
        self.no_data = 0
        self.next_at = 0.0
        self.baseline_used = self.baseline

    def passing(self):
        return len(self.samples) >= self.needed

    def report(self):
        return dict(name=self.name, query=self.query, condition=self.condition.text,
                    baseline=self.baseline_used, peer_regions=[p["name"] for p in self.peers],
                    samples=self.samples, no_data=self.no_data, samples_needed=self.needed,
                    passed=self.passing())


def baseline_of(check, clients, region, started, at):
    """(baseline, how): the peers' median at `at`, or the region's own value before its upgrade."""
    values = {}
    for peer, query in check.peer_queries:
        value = clients[peer["url"]].value(query, at)
        if value is not None:
            values[peer["name"]] = value
    if values:
        how = "median of %d peer(s) %s" % (len(values), ", ".join(values))
        return max(median(list(values.values())), check.floor), how
    if started is None:
        return None, "no peer has data and the upgrade's start is unknown"
    value = clients[region["url"]].value(check.query, started)
    if value is None:
        return None, "no peer left, and no data in the region before its upgrade"
    check.baseline_used = "self before the upgrade"
    return max(value, check.floor), "the region itself before its upgrade (no peer left)"


def failure(check, sample, region):
    base = ""
    if sample.get("baseline") is not None:
        base = " (baseline %.6g: %s%s)" % (sample["baseline"], sample["baseline_from"],
                                           ", floor %.6g" % check.floor if check.floor else "")
    return ("region %s failed its metric analysis: check %s: %s = %.6g, which breaks the condition %s%s, "
            "threshold %.6g" % (region["name"], check.name, check.query, sample["value"],
                                check.condition.text, base, sample["threshold"]))


def main():
    target = dict(type="dict", required=True)
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type="str", required=True, choices=["list", "gate", "soak"]),
            region=target,
            peers=dict(type="list", elements="dict", default=[]),
            fleet=dict(type="list", elements="dict", default=[]),
            alerts=dict(type="list", elements="str", default=[]),
            checks=dict(type="list", elements="dict", default=[]),
            window=dict(type="str", default="2m"),
            interval=dict(type="int", default=15),
            samples=dict(type="int", default=4),
            started=dict(type="float"),
            rolled_out=dict(type="float"),
            delay=dict(type="int", default=150),
            timeout=dict(type="int", default=600),
            alert_interval=dict(type="int", default=10),
            on_error=dict(type="str", default="stop", choices=["stop", "pass"]),
            request_timeout=dict(type="float", default=10.0),
            api_grace=dict(type="float", default=30.0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    region = p["region"]
    for field in ("name", "url", "namespace", "statefulset", "job", "pods"):
        if not region.get(field):
            module.fail_json(msg="region %s: rollout_analysis needs %s; set %s"
                             % (region.get("name"), field,
                                "super_node_prometheus_url" if field == "url" else "region." + field))
    problems = check_problems(p["checks"])
    try:
        window = duration_seconds(p["window"])
    except ValueError:
        problems.append("rollout_analysis_window is %r; allowed: a PromQL duration such as 2m or 90s" % p["window"])
    else:
        # A rate over a window that still holds the rollout (old pods, a counter restarted mid-window)
        # reads low: the first sample waits until the window holds only what came after it.
        if p["delay"] < window:
            problems.append("rollout_analysis_delay is %ss, shorter than rollout_analysis_window %s; allowed: "
                            "at least the window (%gs) plus a scrape interval" % (p["delay"], p["window"], window))
    if problems:
        module.fail_json(msg="region %s: %s. Nothing was changed." % (region["name"], "; ".join(problems)))
    checks = [Check(c, region, [t for t in p["peers"] if t.get("url")], p["window"], p["interval"], p["samples"])
              for c in p["checks"]]
    result = dict(changed=False, checks=[], alerts_firing=[], stopped=False, skipped=False)

    def finish(failed_msg=None):
        """Every way out: the checks as they stand, then exit, or fail with failed_msg."""
        result["checks"] = [c.report() for c in checks]
        if failed_msg:
            module.fail_json(msg=failed_msg, **result)
        module.exit_json(**result)

    if p["mode"] == "list" or module.check_mode:
        finish()

    result["at"] = time.time()  # the gate's time: the soak's baseline of the region before its upgrade
    clients = {}
    for t in [region] + p["peers"] + p["fleet"]:
        if t.get("url") and t["url"] not in clients:
            clients[t["url"]] = Prometheus(t["url"], p["request_timeout"], p["api_grace"])
    fleet_regions = sorted({t["name"] for t in p["fleet"]} | {region["name"]})
    alert_urls = sorted({t["url"] for t in p["fleet"] if t.get("url")} | {region["url"]})

    def alerts_gate():
        firing = []
        for url in alert_urls:
            firing += clients[url].firing(p["alerts"], region["namespace"], fleet_regions)
        if firing:
            result["alerts_firing"] = [dict(labels=a["labels"], annotations=a.get("annotations", {}))
                                       for a in firing]
            finish("rollout stopped %s region %s: alert(s) firing: %s"
                   % ("before" if p["mode"] == "gate" else "during the soak of", region["name"],
                      describe_alerts(firing)))

    try:
        if p["mode"] == "gate":
            alerts_gate()
            for check in checks:  # Prometheus accepts every query (a rejected one raises)
                clients[region["url"]].value(check.query)
                for peer, query in check.peer_queries:
                    clients[peer["url"]].value(query)
            finish()

        start = time.time()
        result["rolled_out"] = start if p["rolled_out"] is None else min(p["rolled_out"], start)
        first = result["rolled_out"] + p["delay"]  # in the past for a region rolled out long ago
        deadline = max(first, start) + p["timeout"]
        next_alerts = start
        for check in checks:  # no sample of what was scraped before or during the rollout
            check.next_at = first
        while True:
            now = time.time()
            if now >= next_alerts:
                alerts_gate()
                next_alerts = now + p["alert_interval"]
            for check in checks:
                if check.passing() or now < check.next_at:
                    continue
                check.next_at = now + check.interval
                at = time.time()
                value = clients[region["url"]].value(check.query, at)
                if value is None:
                    check.no_data += 1
                    continue
                sample = dict(at=round(at, 3), value=value)
                if check.condition.uses_baseline:
                    base, how = baseline_of(check, clients, region, p["started"], at)
                    if base is None:
                        check.no_data += 1
                        continue
                    sample.update(baseline=base, baseline_from=how)
                sample["threshold"] = check.condition.threshold(sample.get("baseline"))
                sample["passed"] = check.condition.holds(value, sample.get("baseline"))
                check.samples.append(sample)
                if not sample["passed"]:
                    finish(failure(check, sample, region))
            if all(c.passing() for c in checks):
                finish()
            if time.time() > deadline:
                short = ["%s (%d of %d samples, %d without data)" % (c.name, len(c.samples), c.needed, c.no_data)
                         for c in checks if not c.passing()]
                finish("region %s failed its metric analysis: after %ss, not every check has its samples: %s"
                       % (region["name"], p["timeout"], "; ".join(short)))
            due = min([c.next_at for c in checks if not c.passing()] + [next_alerts])
            time.sleep(max(0.2, min(due - time.time(), 5.0)))
    except QueryError as err:
        finish("region %s: the metric analysis' query is wrong: %s" % (region["name"], err))
    except AnalysisError as err:
        msg = "region %s: the metric analysis could not read Prometheus: %s" % (region["name"], err)
        if p["on_error"] == "pass":
            result["skipped"] = True
            module.warn(msg + " (rollout_analysis_on_error=pass: the region passes unjudged)")
        else:
            result["stopped"] = True
            result["msg"] = msg
        finish()


if __name__ == "__main__":
    main()
