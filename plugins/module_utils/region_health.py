# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Reads the Super-Node workload of one or more regions of a cluster and judges its health.

The region_health module is a thin wrapper around check_region_health(). The judgement
(judge_region) works on the API's JSON objects as plain dicts, so it needs no cluster to test.

Reading: module_utils/kube.py, a small REST client (the kubernetes Python client's import alone
costs about a third of a second of CPU per task). Per poll the check makes seven GET requests, however many regions it
judges: one list each of StatefulSets, pods, PVCs, PDBs, HPAs and ConfigMaps in the namespace, and
one read of the staking-keys Secret, of which only the key names are kept.

Weather: each GET is retried by the client while it fails with a connection error, a timeout,
429 or 5xx, for at most api_grace seconds (and, when waiting, not past the wait's deadline). So a
poll that fails means the API server has not answered for the grace: the check ends then, in the
wait, the hold or a gate alike. A region that answers and is unhealthy is judged as before.
"""
from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

from ansible_collections.icn.super_node.plugins.module_utils.kube import (
    DEFAULT_GRACE, KUBE_ARGUMENT_SPEC, KubeClient, KubeError)

APP_NAME = "icn-super-node"
APP_LABEL = "app.kubernetes.io/name"
REGION_LABEL = "icn.network/region"
REVISION_LABEL = "controller-revision-hash"
# The chart's volumeClaimTemplate; used to find a region's volumes when its StatefulSet is gone.
DEFAULT_CLAIM_TEMPLATES = ("data",)
REGION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

ARGUMENT_SPEC = dict(
    KUBE_ARGUMENT_SPEC,
    namespace=dict(type="str", default="icn"),
    regions=dict(type="list", elements="str"),
    clusters=dict(type="list", elements="dict", options=dict(
        kubeconfig=dict(type="path"),
        context=dict(type="str"),
        regions=dict(type="list", elements="str", required=True),
    )),
    secret_name=dict(type="str", default="icn-staking-keys"),
    expect_image_tag=dict(type="str"),
    expect_hpa=dict(type="bool", default=True),
    require_disruption_allowed=dict(type="bool", default=False),
    wait=dict(type="bool", default=False),
    wait_timeout=dict(type="float", default=300.0),
    poll_interval=dict(type="float", default=1.0),
    hold_seconds=dict(type="float", default=0.0),
    request_timeout=dict(type="float", default=10.0),
    fail_on_unhealthy=dict(type="bool", default=True),
)


class RegionHealthError(Exception):
    """The check could not be made: bad input, unusable kubeconfig, or a failed API call."""


@dataclass(frozen=True)
class Expectations:
    secret_name: str = ARGUMENT_SPEC["secret_name"]["default"]
    expect_image_tag: str | None = None
    expect_hpa: bool = True
    require_disruption_allowed: bool = False


@dataclass(frozen=True)
class Snapshot:
    """What one poll read from a namespace: objects by name (pods by region), as JSON dicts."""
    statefulsets: dict
    pods: dict
    pvcs: dict
    pdbs: dict
    hpas: dict
    configmaps: frozenset
    secret_keys: frozenset | None  # None: the Secret does not exist


def object_name(region: str) -> str:
    return f"{APP_NAME}-{region}"


def validate(params: dict) -> None:
    if not params["regions"]:
        raise RegionHealthError("regions must name at least one region")
    bad = [r for r in params["regions"] if not REGION_NAME.match(r)]
    if bad:
        raise RegionHealthError(f"regions must be lowercase DNS labels, not {', '.join(map(repr, bad))}")
    for option in ("wait_timeout", "hold_seconds", "api_grace"):
        if params[option] < 0:
            raise RegionHealthError(f"{option} must be 0 or more seconds")
    for option in ("poll_interval", "request_timeout"):
        if params[option] <= 0:
            raise RegionHealthError(f"{option} must be more than 0 seconds")


# --------------------------------------------------------------------------- reading

class NamespaceReader:
    """GETs of one namespace's objects as JSON; each attempt is bounded by the request timeout,
    a transient failure is retried for the grace (not past `deadline`, a time.monotonic(), when
    set), and every failure becomes a RegionHealthError naming what was read."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str,
                 request_timeout: float, api_grace: float = DEFAULT_GRACE):
        try:
            self.client = KubeClient(kubeconfig, context, request_timeout, api_grace)
        except KubeError as err:
            raise RegionHealthError(str(err)) from None
        self.namespace = namespace
        self.deadline: float | None = None

    def close(self) -> None:
        self.client.close()

    def _get(self, what: str, path: str, query: dict | None = None, missing_ok: bool = False):
        try:
            return self.client.get(path, what, query=query, missing_ok=missing_ok,
                                   deadline=self.deadline)
        except KubeError as err:
            raise RegionHealthError(str(err)) from None

    def _list(self, kind: str, api: str, resource: str, label_selector: str | None = None) -> list:
        path = f"{api}/namespaces/{quote(self.namespace)}/{resource}"
        query = {"labelSelector": label_selector} if label_selector else None
        return self._get(f"listing {kind} in namespace {self.namespace}", path, query)["items"]

    def _secret_keys(self, secret_name: str) -> frozenset | None:
        secret = self._get(f"reading Secret {secret_name} in namespace {self.namespace}",
                           f"/api/v1/namespaces/{quote(self.namespace)}/secrets/{quote(secret_name)}",
                           missing_ok=True)
        return None if secret is None else frozenset(secret.get("data") or {})  # key names only

    def snapshot(self, regions: list[str], secret_name: str) -> Snapshot:
        selector = f"{APP_LABEL}={APP_NAME},{REGION_LABEL} in ({','.join(regions)})"
        pods: dict[str, list] = {region: [] for region in regions}
        for pod in self._list("pods", "/api/v1", "pods", label_selector=selector):
            pods[pod["metadata"]["labels"][REGION_LABEL]].append(pod)

        def by_name(objs: list) -> dict:
            return {obj["metadata"]["name"]: obj for obj in objs}

        return Snapshot(
            statefulsets=by_name(self._list("StatefulSets", "/apis/apps/v1", "statefulsets")),
            pods=pods,
            pvcs=by_name(self._list("PVCs", "/api/v1", "persistentvolumeclaims")),
            pdbs=by_name(self._list("PDBs", "/apis/policy/v1", "poddisruptionbudgets")),
            hpas=by_name(self._list("HPAs", "/apis/autoscaling/v2", "horizontalpodautoscalers")),
            configmaps=frozenset(by_name(self._list("ConfigMaps", "/api/v1", "configmaps"))),
            secret_keys=self._secret_keys(secret_name),
        )


# --------------------------------------------------------------------------- judging

def image_tag(image: str | None) -> str | None:
    """The tag of an image reference (registry:5000/icn/node:v1.2.0@sha256:... -> v1.2.0)."""
    if not image:
        return None
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def ordinal(name: str) -> int:
    """The StatefulSet ordinal at the end of a pod or PVC name (-1 when there is none)."""
    suffix = name.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def claims_of(statefulset: str, claim_templates: tuple, pvcs: dict) -> list:
    """The PVCs made from the StatefulSet's claim templates (<template>-<statefulset>-<n>),
    by ordinal; retained claims of ordinals above the replica count included."""
    def made_here(claim: str) -> bool:
        for template in claim_templates:
            prefix = f"{template}-{statefulset}-"
            if claim.startswith(prefix) and claim[len(prefix):].isdigit():
                return True
        return False

    return [pvcs[n] for n in sorted((n for n in pvcs if made_here(n)), key=lambda n: (ordinal(n), n))]


def conditions(obj: dict) -> dict:
    return {c["type"]: c for c in obj.get("status", {}).get("conditions") or []}


def pod_is_ready(pod: dict) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return conditions(pod).get("Ready", {}).get("status") == "True"


def container_image(pod: dict, container_name: str | None) -> str | None:
    containers = pod["spec"].get("containers") or []
    for container in containers:
        if container["name"] == container_name:
            return container.get("image")
    return containers[0].get("image") if containers else None


def not_ready_reason(pod: dict, container_name: str | None) -> str:
    """The most specific reason Kubernetes gives for a pod that is not Ready."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if status["name"] == container_name and waiting.get("reason"):
            return waiting["reason"]
    found = conditions(pod)
    for kind in ("PodScheduled", "Ready"):
        cond = found.get(kind, {})
        if cond.get("status") not in (None, "True") and cond.get("reason"):
            return cond["reason"]
    return pod.get("status", {}).get("phase") or "unknown"


def judge_statefulset(name: str, sts: dict | None, hpa: dict | None, expect: Expectations,
                      problems: list) -> dict:
    if sts is None:
        problems.append(f"StatefulSet {name} is missing")
        return dict(exists=False, desired=None, replicas=None, ready=None, updated=None,
                    available=None, current_revision=None, update_revision=None, generation=None,
                    observed_generation=None, rollout_complete=False)
    spec, status = sts["spec"], sts.get("status", {})
    spec_replicas = spec.get("replicas", 1)
    # A fresh StatefulSet starts at 1 replica until the HPA raises it to its minimum.
    desired = max(spec_replicas, hpa["spec"].get("minReplicas", 1)) if hpa else spec_replicas
    ready = status.get("readyReplicas", 0)
    updated = status.get("updatedReplicas", 0)
    generation = sts["metadata"]["generation"]
    observed = status.get("observedGeneration", 0)
    current_revision, update_revision = status.get("currentRevision"), status.get("updateRevision")
    if observed < generation:
        problems.append(f"StatefulSet {name}: generation {generation} not yet observed "
                        f"by the controller (observed {observed})")
    if ready != desired:
        problems.append(f"StatefulSet {name}: {ready}/{desired} replicas Ready")
    if updated != desired:
        problems.append(f"StatefulSet {name}: {updated}/{desired} replicas on revision "
                        f"{update_revision}")
    if current_revision != update_revision:
        problems.append(f"StatefulSet {name}: rollout from revision {current_revision} "
                        f"to {update_revision} not complete")
    template_tag = image_tag(spec["template"]["spec"]["containers"][0].get("image"))
    if expect.expect_image_tag and template_tag != expect.expect_image_tag:
        problems.append(f"StatefulSet {name} template is on {template_tag}, "
                        f"expected {expect.expect_image_tag}")
    return dict(exists=True, desired=desired, replicas=status.get("replicas", 0), ready=ready,
                updated=updated, available=status.get("availableReplicas", 0),
                current_revision=current_revision, update_revision=update_revision,
                generation=generation, observed_generation=observed,
                rollout_complete=(observed >= generation and current_revision == update_revision
                                  and updated >= spec_replicas and ready >= spec_replicas))


def judge_pods(pods: list, container_name: str | None, claim_templates: tuple, pvcs: dict,
               expect: Expectations, problems: list) -> list:
    reports = []
    for pod in sorted(pods, key=lambda p: ordinal(p["metadata"]["name"])):
        name = pod["metadata"]["name"]
        image = container_image(pod, container_name)
        ready = pod_is_ready(pod)
        reports.append(dict(name=name, node=pod["spec"].get("nodeName"), ready=ready,
                            revision=pod["metadata"].get("labels", {}).get(REVISION_LABEL),
                            image=image))
        if pod["metadata"].get("deletionTimestamp"):
            problems.append(f"pod {name} is terminating")
        elif not ready:
            problems.append(f"pod {name} ({image_tag(image)}) is not Ready: "
                            f"{not_ready_reason(pod, container_name)}")
        if expect.expect_image_tag and image_tag(image) != expect.expect_image_tag:
            problems.append(f"pod {name} runs {image_tag(image)}, expected {expect.expect_image_tag}")
        for template in claim_templates:
            claim = pvcs.get(f"{template}-{name}")
            if claim is None:
                problems.append(f"PVC {template}-{name} is missing")
            elif claim.get("status", {}).get("phase") != "Bound":
                problems.append(f"PVC {template}-{name} is {claim.get('status', {}).get('phase')}")
    return reports


def judge_pdb(name: str, pdb: dict | None, expect: Expectations, problems: list) -> dict:
    if pdb is None:
        problems.append(f"PDB {name} is missing")
        return dict(exists=False, min_available=None, current_healthy=None, desired_healthy=None,
                    disruptions_allowed=None)
    status = pdb.get("status", {})
    current, wanted = status.get("currentHealthy", 0), status.get("desiredHealthy", 0)
    allowed = status.get("disruptionsAllowed", 0)
    if current < wanted:
        problems.append(f"PDB {name}: {current} healthy pods, {wanted} required")
    if expect.require_disruption_allowed and allowed < 1:
        problems.append(f"PDB {name} allows {allowed} disruptions")
    return dict(exists=True, min_available=pdb["spec"].get("minAvailable"), current_healthy=current,
                desired_healthy=wanted, disruptions_allowed=allowed)


def judge_hpa(name: str, hpa: dict | None, expect: Expectations, problems: list) -> dict:
    if hpa is None:
        if expect.expect_hpa:
            problems.append(f"HPA {name} is missing")
        return dict(exists=False, min=None, max=None, current=None, desired=None)
    status = hpa.get("status", {})
    return dict(exists=True, min=hpa["spec"].get("minReplicas", 1), max=hpa["spec"]["maxReplicas"],
                current=status.get("currentReplicas", 0), desired=status.get("desiredReplicas", 0))


def judge_region(region: str, snap: Snapshot, expect: Expectations) -> dict:
    """The report of one region: what exists, the counts, and every problem found."""
    name = object_name(region)
    problems: list[str] = []
    sts, hpa = snap.statefulsets.get(name), snap.hpas.get(name)
    statefulset = judge_statefulset(name, sts, hpa, expect, problems)
    if sts is None:
        container_name = template_image = None
        claim_templates = DEFAULT_CLAIM_TEMPLATES
    else:
        main = sts["spec"]["template"]["spec"]["containers"][0]
        container_name, template_image = main["name"], main.get("image")
        claim_templates = tuple(t["metadata"]["name"]
                                for t in sts["spec"].get("volumeClaimTemplates") or [])
    pods = judge_pods(snap.pods.get(region, []), container_name, claim_templates, snap.pvcs, expect,
                      problems)
    claims = claims_of(name, claim_templates, snap.pvcs)
    pdb = judge_pdb(name, snap.pdbs.get(name), expect, problems)
    hpa_report = judge_hpa(name, hpa, expect, problems)

    configmap = f"{name}-bootstrap"
    if configmap not in snap.configmaps:
        problems.append(f"ConfigMap {configmap} is missing")
    key = f"{region}-staking-key"
    if snap.secret_keys is None:
        problems.append(f"Secret {expect.secret_name} is missing")
    elif key not in snap.secret_keys:
        problems.append(f"Secret {expect.secret_name} has no key {key}")

    return dict(
        statefulset=statefulset, image=template_image, image_tag=image_tag(template_image),
        pods=pods,
        pvcs=dict(total=len(claims),
                  bound=sum(c.get("status", {}).get("phase") == "Bound" for c in claims),
                  names=[c["metadata"]["name"] for c in claims]),
        pdb=pdb, hpa=hpa_report, configmap=configmap in snap.configmaps,
        secret_key=snap.secret_keys is not None and key in snap.secret_keys,
        healthy=not problems, problems=problems)


# --------------------------------------------------------------------------- the check

def check_region_health(params: dict) -> dict:
    """Reads and judges the regions, polling until healthy when params["wait"] is set.

    Returns {regions, healthy, problems, elapsed}; raises RegionHealthError when the check
    cannot be made: an API error that is not transient ends the check at once, waiting or not; a
    transient one (the server away, 429, 5xx) once it has lasted params["api_grace"] seconds, or
    when waiting, at the wait's deadline if that comes first."""
    validate(params)
    started = time.monotonic()
    deadline = started + (params["wait_timeout"] if params["wait"] else 0)
    expect = Expectations(secret_name=params["secret_name"],
                          expect_image_tag=params["expect_image_tag"],
                          expect_hpa=params["expect_hpa"],
                          require_disruption_allowed=params["require_disruption_allowed"])
    reader = NamespaceReader(params["kubeconfig"], params["context"], params["namespace"],
                             params["request_timeout"], params["api_grace"])

    def judge() -> tuple[dict, bool]:
        snap = reader.snapshot(params["regions"], params["secret_name"])
        reports = {region: judge_region(region, snap, expect) for region in params["regions"]}
        return reports, all(report["healthy"] for report in reports.values())

    try:
        if params["wait"]:
            reader.deadline = deadline
        while True:
            reports, healthy = judge()
            if healthy or time.monotonic() + params["poll_interval"] > deadline:
                break
            time.sleep(params["poll_interval"])
        # Holding: healthy must stay healthy at every poll for hold_seconds (a soak). A region
        # that answers unhealthy ends it at once; one that does not answer gets the grace (the
        # client's retries), even at the end of the hold: the verdict needs a read.
        reader.deadline = None
        hold_until = time.monotonic() + params["hold_seconds"]
        while healthy and time.monotonic() < hold_until:
            time.sleep(min(params["poll_interval"], max(hold_until - time.monotonic(), 0)))
            reports, healthy = judge()
    finally:
        reader.close()
    return dict(regions=reports, healthy=healthy,
                problems=[f"{region}: {problem}" for region, report in reports.items()
                          for problem in report["problems"]],
                elapsed=round(time.monotonic() - started, 2))


def check_clusters(params: dict) -> dict:
    """Judges the regions of several clusters at once (params["clusters"]), each cluster read in
    its own thread: the gate of a rollout sees every region in about the time of one.

    A cluster that cannot be read does not raise: each of its regions is reported unhealthy with
    the reason, so the caller can name the region that stops a rollout."""
    def one(cluster: dict) -> dict:
        single = dict(params, clusters=None, **cluster)
        try:
            return check_region_health(single)
        except RegionHealthError as err:
            where = f"context {cluster['context']}" if cluster.get("context") else "the current context"
            problem = f"cannot be read ({where}): {err}"
            return dict(regions={r: dict(healthy=False, problems=[problem], reachable=False)
                                 for r in cluster["regions"]},
                        healthy=False, problems=[f"{r}: {problem}" for r in cluster["regions"]])

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(8, len(params["clusters"]))) as pool:
        results = list(pool.map(one, params["clusters"]))
    regions: dict = {}
    for result in results:
        regions.update(result["regions"])
    return dict(regions=regions, healthy=all(r["healthy"] for r in results),
                problems=[p for r in results for p in r["problems"]],
                elapsed=round(time.monotonic() - started, 2))
