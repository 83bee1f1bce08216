# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Metric analysis of a region during its soak: checks, their conditions, baselines, Prometheus reads.

A check is a PromQL query with placeholders, a condition, an interval and a number of samples:

    name: bandwidth-per-pod
    query: sum(rate(icn_super_node_network_bytes_total{namespace="$namespace", pod=~"$pods"}[$window]))
           / count(up{namespace="$namespace", job="$job"} == 1)
    condition: "> 0.8 * baseline"
    baseline: peers            # none (default) | peers
    baseline_floor: 1000000    # the baseline is never taken below this
    interval: 10               # seconds between samples
    samples: 3                 # passing samples needed

Placeholders ($region, $namespace, $statefulset, $pods, $job, $window) are filled in for the region
under analysis, and for each peer the same way, so one query reads any region. The query must return
one series or a scalar: aggregate it. A sample with no data is not a sample (the check waits for one).

`baseline: peers` compares the region with the regions still on the old release, over the same
window, at the same instant: the baseline is the median of their values. With no such region left
(the last one of a rollout), the region's own value just before its upgrade is the baseline, and the
result says so. The condition is then `OP RATIO * baseline` (or `OP baseline`), and the baseline is
never taken below `baseline_floor`: so a fleet-wide swing moves the baseline with the region and does
not fail it, a change that only the new release shows does, and a near-zero baseline (no errors
anywhere) does not make the slightest value a regression.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import math
import re
import socket
import string
import time

from ansible_collections.icn.super_node.plugins.module_utils.kube import (
    RETRY_STATUSES, RetryPolicy, retry_after)

try:
    from urllib.error import HTTPError, URLError
    from urllib.parse import urlencode
    from urllib.request import Request, urlopen
except ImportError:  # pragma: no cover (Python 2 is not supported; kept importable for sanity)
    pass

OPERATORS = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
CONDITION = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*(?:(?P<number>%s)\s*(?P<times>\*\s*baseline)?|"
                       r"(?P<bare>baseline))\s*$" % NUMBER)
BASELINES = ("none", "peers")
PLACEHOLDERS = ("region", "namespace", "statefulset", "pods", "job", "window")
CHECK_KEYS = ("name", "query", "condition", "baseline", "baseline_floor", "interval", "samples")


class AnalysisError(Exception):
    """Prometheus could not be read (not a failed check)."""


class QueryError(AnalysisError):
    """Prometheus answered, but the query is wrong (rejected, or more than one series): a failed
    region, whatever rollout_analysis_on_error says, since no retry or wait would help."""


class Condition:
    """`< 0.01`, `>= 1`, `> 0.9 * baseline`, `<= baseline`."""

    def __init__(self, text):
        match = CONDITION.match(text or "")
        if not match:
            raise ValueError(text)
        self.text = text.strip()
        self.op = match.group(1)
        self.uses_baseline = bool(match.group("times") or match.group("bare"))
        self.factor = float(match.group("number")) if match.group("number") else 1.0

    def threshold(self, baseline=None):
        return self.factor * baseline if self.uses_baseline else self.factor

    def holds(self, value, baseline=None):
        return OPERATORS[self.op](value, self.threshold(baseline))


def check_problems(checks, field="rollout_analysis"):
    """What is wrong with a list of checks, each message naming the field and what is allowed."""
    problems = []
    if not isinstance(checks, list):
        return ["%s is %s, not a list; allowed: a list of checks (name, query, condition, interval, "
                "samples, baseline)" % (field, type(checks).__name__)]
    names = set()
    for i, check in enumerate(checks):
        where = "%s[%d]" % (field, i)
        if not isinstance(check, dict):
            problems.append("%s is not a mapping; allowed: name, query, condition, interval, samples, "
                            "baseline, baseline_floor" % where)
            continue
        name = check.get("name")
        if isinstance(name, str) and name:
            where = "%s[%s]" % (field, name)
            if name in names:
                problems.append("%s.name is used twice; allowed: a name per check" % where)
            names.add(name)
        else:
            problems.append("%s.name is missing; allowed: a short name such as restarts" % where)
        unknown = sorted(set(check) - set(CHECK_KEYS))
        if unknown:
            problems.append("%s has unknown key(s) %s; allowed: %s" % (where, ", ".join(unknown),
                                                                      ", ".join(CHECK_KEYS)))
        query = check.get("query")
        if not isinstance(query, str) or not query.strip():
            problems.append("%s.query is missing; allowed: a PromQL expression" % where)
        else:
            try:
                fill(query, placeholders_for())
            except KeyError as err:
                problems.append("%s.query has the unknown placeholder $%s; allowed: %s"
                                % (where, err.args[0], ", ".join("$" + p for p in PLACEHOLDERS)))
            except ValueError:
                problems.append("%s.query has a lone $; allowed: the placeholders %s (write $$ for a $)"
                                % (where, ", ".join("$" + p for p in PLACEHOLDERS)))
        baseline = check.get("baseline", "none")
        if baseline not in BASELINES:
            problems.append("%s.baseline is %r; allowed: %s" % (where, baseline, ", ".join(BASELINES)))
        try:
            condition = Condition(check.get("condition"))
        except (ValueError, TypeError):
            problems.append("%s.condition is %r; allowed: OP NUMBER, OP baseline or OP NUMBER * baseline, "
                            "with OP one of < <= > >= == !=" % (where, check.get("condition")))
        else:
            if condition.uses_baseline and baseline == "none":
                problems.append("%s.condition %r names the baseline, but baseline is none; allowed: "
                                "baseline: peers, or a condition without baseline" % (where, condition.text))
            if not condition.uses_baseline and baseline != "none":
                problems.append("%s.condition %r does not name the baseline that baseline: %s reads; "
                                "allowed: OP NUMBER * baseline" % (where, condition.text, baseline))
        for key, low in (("interval", 1), ("samples", 1)):
            if key not in check:  # the module's interval and samples
                continue
            value = check.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append("%s.%s is %r; allowed: a whole number from %d" % (where, key, value, low))
        floor = check.get("baseline_floor", 0)
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or floor < 0:
            problems.append("%s.baseline_floor is %r; allowed: a number from 0" % (where, floor))
    return problems


DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")


def duration_seconds(text):
    """A PromQL duration ("2m", "1h30m", "20s") in seconds; ValueError if it is not one."""
    match = DURATION.match(text or "")
    if not text or not match or not any(match.groups()):
        raise ValueError(text)
    units = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
    return sum(int(g) * u for g, u in zip(match.groups(), units) if g)


def placeholders_for(region="r", namespace="ns", statefulset="sts", pods="sts-[0-9]+", job="job",
                     window="1m"):
    return dict(region=region, namespace=namespace, statefulset=statefulset, pods=pods, job=job,
                window=window)


def fill(query, placeholders):
    """The query with $placeholders filled in (KeyError: an unknown one; ValueError: a lone $)."""
    return string.Template(query).substitute(placeholders)


def median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


class Prometheus:
    """Instant queries and the alerts of one Prometheus, retried while it answers 429, 5xx or not at all,
    for up to `grace` seconds in all."""

    def __init__(self, url, request_timeout=10.0, grace=30.0, sleep=time.sleep):
        self.url = url.rstrip("/")
        self.request_timeout = request_timeout
        self.grace = grace
        self.retry = RetryPolicy(grace)  # the collection's backoff, as for the Kubernetes APIs
        self.sleep = sleep

    def _get(self, path, params):
        url = "%s%s?%s" % (self.url, path, urlencode(params))
        started, attempts = time.monotonic(), 0
        while True:
            after = None
            try:
                with urlopen(Request(url, headers={"Accept": "application/json"}),
                             timeout=self.request_timeout) as resp:
                    body = json.loads(resp.read().decode("utf-8"))
                break
            except HTTPError as err:
                if err.code in (400, 422):  # a bad query: no retry helps
                    raise QueryError("%s rejected the query: %s" % (self.url, _error_text(err)))
                if err.code not in RETRY_STATUSES:
                    raise AnalysisError("Prometheus %s answered HTTP %d" % (self.url, err.code))
                problem = "HTTP %d" % err.code
                after = retry_after(err.headers.get("Retry-After") if err.headers else None)
            except (URLError, socket.timeout, ConnectionError, OSError, ValueError) as err:
                problem = str(getattr(err, "reason", err))
            attempts += 1
            wait = self.retry.delay(attempts, time.monotonic() - started, after)
            if wait is None:
                raise AnalysisError("Prometheus %s did not answer for %ss (%s)" % (self.url, self.grace, problem))
            self.sleep(wait)
        if body.get("status") != "success":
            raise AnalysisError("%s: %s" % (self.url, body.get("error") or body))
        return body["data"]

    def value(self, query, at=None):
        """The query's one value at `at` (epoch seconds; now if None), or None when it returns nothing."""
        params = {"query": query}
        if at is not None:
            params["time"] = "%.3f" % at
        data = self._get("/api/v1/query", params)
        if data.get("resultType") == "scalar":
            number = float(data["result"][1])
        else:
            result = data.get("result") or []
            if not result:
                return None
            if len(result) > 1:
                raise QueryError("the query returns %d series, not one: aggregate it (sum, max, avg): %s"
                                    % (len(result), query))
            number = float(result[0]["value"][1])
        return None if math.isnan(number) else number

    def firing(self, names, namespace, regions):
        """Firing alerts among `names` for `namespace` and one of `regions`."""
        alerts = self._get("/api/v1/alerts", {}).get("alerts") or []
        return [a for a in alerts if a.get("state") == "firing"
                and a["labels"].get("alertname") in names
                and a["labels"].get("namespace") == namespace
                and a["labels"].get("region") in regions]


def _error_text(err):
    try:
        return json.loads(err.read().decode("utf-8")).get("error") or str(err)
    except Exception:  # pylint: disable=broad-except
        return str(err)


def describe_alerts(alerts):
    return "; ".join("%s in region %s%s" % (a["labels"]["alertname"], a["labels"].get("region"),
                                            " (%s)" % a["labels"]["pod"] if a["labels"].get("pod") else "")
                     for a in alerts)
