#!/usr/bin/env python3
"""The lab's exporter and Prometheus "operator": the series a real fleet would have, from the clusters.

kwok's pods run no process, so nothing in the lab serves /metrics by itself. This process does, one
plain-HTTP port per cluster of the lab, for the lab's Prometheus (icnlab.py up --prometheus):

  /metrics                    what kube-state-metrics and the kubelets serve, read from the cluster's
                              objects: kube_pod_status_ready/phase, container restarts, StatefulSet and
                              HPA replicas, kubelet_volume_stats_* of the PVCs that running pods mount
  /pods/NAMESPACE/POD/metrics the pod's own series: every icn_super_node_* value set for it in the
                              ConfigMap kube-system/lab-metrics (lab/metrics_api.py says how keys name
                              a pod, its owner, its image tag or its namespace). A name ending in
                              _total is a counter
                              and its value is the rate per second it grows at (from 0 when the pod is
                              created: a new pod is a restarted process); any other is a gauge.
                              `N.P.up: "0"` makes the scrape fail (HTTP 503), so the target is down.

and does what prometheus-operator does for a real Prometheus, every SYNC_SECONDS:
  - the ServiceMonitors of each cluster become file_sd targets (DIR/targets/CONTEXT.json): one per
    endpoint of the EndpointSlices of the Services they select, job = the Service's name, with the
    labels namespace, service, pod, endpoint, and region and cluster;
  - the PrometheusRules of each cluster, as deployed, become a rules file (DIR/rules/CONTEXT.yml) and
    Prometheus is told to reload (POST /-/reload) when one changes.

    exporter.py --kubeconfig KUBECONFIG --dir DIR --ports-file OUT --prometheus-url URL
                [--through-api-server] CONTEXT=REGION...

--through-api-server (kind clusters, whose pods really run: lab/kind/prometheus.py): the targets are
the pods' own /metrics through the cluster's API server, /api/v1/namespaces/NS/pods/POD:PORT/proxy/PATH.

Only the standard library is used, like icnlab.py (the rules files are JSON, which is YAML).
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from metrics_api import Cluster, Server, parse_quantity, value_of  # noqa: E402

SNAPSHOT_SECONDS = 2.0
SYNC_SECONDS = 2.0
OWN_PREFIX = "icn_super_node_"
VOLUME_USED = "kubelet_volume_stats_used_bytes"
REGION_LABEL = "icn.network/region"
# Every pod's own series until a test sets others: 12.5 MB/s (the lab metrics API's default 100 Mbit/s)
# through monitoring_bandwidth_counter, no errors, no shard still re-syncing. The last two names are the
# lab's: the Super-Node image does not document its metrics yet.
OWN_DEFAULTS = {"icn_super_node_network_bytes_total": "12.5M", "icn_super_node_errors_total": "0",
                "icn_super_node_shards_resyncing": "0"}
LISTS = {
    "pods": "/api/v1/pods",
    "services": "/api/v1/services",
    "pvcs": "/api/v1/persistentvolumeclaims",
    "statefulsets": "/apis/apps/v1/statefulsets",
    "hpas": "/apis/autoscaling/v2/horizontalpodautoscalers",
    "slices": "/apis/discovery.k8s.io/v1/endpointslices",
    "servicemonitors": "/apis/monitoring.coreos.com/v1/servicemonitors",
    "prometheusrules": "/apis/monitoring.coreos.com/v1/prometheusrules",
}


def log(msg: str) -> None:
    print(f"[exporter] {msg}", file=sys.stderr, flush=True)


class Source:
    """One cluster's objects, listed at most every SNAPSHOT_SECONDS, and its pods' counters."""

    def __init__(self, cluster: Cluster, region: str):
        self.cluster, self.region = cluster, region
        self._lock = threading.Lock()
        self._stamp, self._objects = 0.0, {}
        self._counters: dict[tuple[str, str], tuple[float, float]] = {}

    def objects(self) -> dict[str, list[dict]]:
        with self._lock:
            if time.monotonic() - self._stamp >= SNAPSHOT_SECONDS:
                # A list the cluster does not serve (no CRD yet) is empty, not an error.
                self._objects = {k: (self.cluster.get(path) or {}).get("items") or []
                                 for k, path in LISTS.items()}
                self._stamp = time.monotonic()
            return self._objects

    def counter(self, uid: str, name: str, rate: float) -> float:
        """A counter growing at `rate` per second since this process first saw the pod."""
        with self._lock:
            now = time.monotonic()
            last, total = self._counters.get((uid, name), (now, 0.0))
            total += max(rate, 0.0) * (now - last)
            self._counters[(uid, name)] = (now, total)
            return total

    def region_of(self, obj: dict) -> str:
        return ((obj.get("metadata") or {}).get("labels") or {}).get(REGION_LABEL, self.region)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Exposition:
    """Prometheus' text format, one # TYPE line per family."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.typed: set[str] = set()

    def add(self, name: str, labels: dict[str, str], value: float, kind: str = "gauge") -> None:
        if name not in self.typed:
            self.lines.append(f"# TYPE {name} {kind}")
            self.typed.add(name)
        text = ",".join(f'{k}="{escape(str(v))}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{text}}} {value:.17g}")

    def text(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


def live(pods: list[dict]) -> list[dict]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def cluster_series(source: Source) -> Exposition:
    """kube-state-metrics and kubelet series of one cluster."""
    objs, values, out = source.objects(), source.cluster.values(), Exposition()
    for pod in live(objs["pods"]):
        meta, status = pod["metadata"], pod.get("status") or {}
        base = {"namespace": meta["namespace"], "pod": meta["name"], "uid": meta["uid"]}
        ready = next((c["status"] for c in status.get("conditions") or [] if c["type"] == "Ready"),
                     None)
        for condition in ("true", "false", "unknown"):
            want = {"true": "True", "false": "False", "unknown": "Unknown"}[condition]
            out.add("kube_pod_status_ready", {**base, "condition": condition},
                    1.0 if ready == want else 0.0)
        phase = status.get("phase", "Pending")
        for name in ("Pending", "Running", "Succeeded", "Failed", "Unknown"):
            out.add("kube_pod_status_phase", {**base, "phase": name}, 1.0 if phase == name else 0.0)
        for cs in status.get("containerStatuses") or []:
            out.add("kube_pod_container_status_restarts_total",
                    {**base, "container": cs["name"]}, float(cs.get("restartCount", 0)), "counter")
    for sts in objs["statefulsets"]:
        meta, spec, status = sts["metadata"], sts.get("spec") or {}, sts.get("status") or {}
        labels = {"namespace": meta["namespace"], "statefulset": meta["name"]}
        out.add("kube_statefulset_replicas", labels, float(spec.get("replicas", 1)))
        for field in ("replicas", "readyReplicas", "currentReplicas", "updatedReplicas"):
            name = {"replicas": "kube_statefulset_status_replicas",
                    "readyReplicas": "kube_statefulset_status_replicas_ready",
                    "currentReplicas": "kube_statefulset_status_replicas_current",
                    "updatedReplicas": "kube_statefulset_status_replicas_updated"}[field]
            out.add(name, labels, float(status.get(field, 0)))
    for hpa in objs["hpas"]:
        meta, spec, status = hpa["metadata"], hpa.get("spec") or {}, hpa.get("status") or {}
        labels = {"namespace": meta["namespace"], "horizontalpodautoscaler": meta["name"]}
        out.add("kube_horizontalpodautoscaler_spec_min_replicas", labels, float(spec.get("minReplicas", 1)))
        out.add("kube_horizontalpodautoscaler_spec_max_replicas", labels, float(spec["maxReplicas"]))
        out.add("kube_horizontalpodautoscaler_status_current_replicas", labels,
                float(status.get("currentReplicas", 0)))
        out.add("kube_horizontalpodautoscaler_status_desired_replicas", labels,
                float(status.get("desiredReplicas", 0)))
    # The kubelet reports the volumes its running pods mount.
    mounted = {(p["metadata"]["namespace"], v["persistentVolumeClaim"]["claimName"])
               for p in live(objs["pods"]) if (p.get("status") or {}).get("phase") == "Running"
               for v in p["spec"].get("volumes") or [] if v.get("persistentVolumeClaim")}
    for pvc in objs["pvcs"]:
        meta = pvc["metadata"]
        if (meta["namespace"], meta["name"]) not in mounted:
            continue
        capacity = parse_quantity(((pvc.get("status") or {}).get("capacity") or {}).get("storage", "0"))
        labels = {"namespace": meta["namespace"], "persistentvolumeclaim": meta["name"]}
        used = volume_used(values, meta["namespace"], meta["name"], capacity)
        out.add("kubelet_volume_stats_capacity_bytes", labels, capacity)
        out.add(VOLUME_USED, labels, used)
    return out


def volume_used(values: dict[str, str], namespace: str, claim: str, capacity: float) -> float:
    """N.CLAIM.M, N.M, then M: bytes, or a percentage of the capacity ("95%")."""
    for key in (f"{namespace}.{claim}.{VOLUME_USED}", f"{namespace}.{VOLUME_USED}", VOLUME_USED):
        if key in values:
            value = values[key]
            return capacity * float(value[:-1]) / 100 if value.endswith("%") else parse_quantity(value)
    return 0.0


def own_names(values: dict[str, str]) -> list[str]:
    """The icn_super_node_* metrics that some key sets (for a pod, an owner, a namespace or all)."""
    return sorted({n for n in (k.rsplit(".", 1)[-1] for k in values) if n.startswith(OWN_PREFIX)})


def pod_series(source: Source, pod: dict) -> Exposition:
    values, out = {**OWN_DEFAULTS, **source.cluster.values()}, Exposition()
    uid = pod["metadata"]["uid"]
    for name in own_names(values):
        value = value_of(values, pod, name)
        if value is None:
            continue
        number = parse_quantity(value)
        if name.endswith("_total"):
            out.add(name, {}, source.counter(uid, name, number), "counter")
        else:
            out.add(name, {}, number)
    return out


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def targets(source: Source, address: str, context: str, through_api_server: bool = False) -> list[dict]:
    """file_sd target groups for the ServiceMonitors of one cluster (prometheus-operator's defaults).
    through_api_server: the pods' own /metrics through the API server's pod proxy at `address`
    (pods that really run, whose addresses this machine cannot reach: kind), the endpoint's port
    resolved by name from the EndpointSlices, `instance` the pod's address and port as
    prometheus-operator sets it; otherwise this exporter's /pods/NAMESPACE/POD path at `address`."""
    objs, groups = source.objects(), []
    pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in objs["pods"]}
    for sm in objs["servicemonitors"]:
        spec, sm_ns = sm.get("spec") or {}, sm["metadata"]["namespace"]
        ns_sel = spec.get("namespaceSelector") or {}
        namespaces = None if ns_sel.get("any") else set(ns_sel.get("matchNames") or [sm_ns])
        for svc in objs["services"]:
            meta = svc["metadata"]
            if namespaces is not None and meta["namespace"] not in namespaces:
                continue
            if not matches(spec.get("selector") or {}, meta.get("labels") or {}):
                continue
            job = (meta.get("labels") or {}).get(spec.get("jobLabel") or "", meta["name"])
            slices = [s for s in objs["slices"] if s["metadata"]["namespace"] == meta["namespace"]
                      and (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == meta["name"]]
            for endpoint in spec.get("endpoints") or []:
                path = endpoint.get("path") or "/metrics"
                port = next((p.get("port") for s in slices for p in s.get("ports") or []
                             if p.get("name") == endpoint.get("port")), None)
                for ep in (e for s in slices for e in s.get("endpoints") or []):
                    ref = ep.get("targetRef") or {}
                    if ref.get("kind") != "Pod":
                        continue
                    pod = pods.get((meta["namespace"], ref["name"]))
                    region = source.region_of(pod) if pod else source.region
                    labels = {"job": job, "namespace": meta["namespace"], "service": meta["name"],
                              "pod": ref["name"], "endpoint": str(endpoint.get("port") or ""),
                              "region": region, "cluster": context}
                    if not through_api_server:
                        labels["__metrics_path__"] = f"/pods/{quote(meta['namespace'])}/{quote(ref['name'])}{path}"
                    elif port and ep.get("addresses"):
                        labels["__metrics_path__"] = (f"/api/v1/namespaces/{quote(meta['namespace'])}/pods/"
                                                      f"{quote(ref['name'])}:{port}/proxy{path}")
                        labels["instance"] = f"{ep['addresses'][0]}:{port}"
                    else:
                        continue
                    groups.append({"targets": [address], "labels": labels})
    return sorted(groups, key=lambda g: g["labels"]["__metrics_path__"])


def rules(source: Source) -> dict:
    """The groups of every PrometheusRule of the cluster, as deployed, one rules file."""
    groups = []
    for obj in sorted(source.objects()["prometheusrules"],
                      key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        for group in (obj.get("spec") or {}).get("groups") or []:
            # Group names must be unique in a file; prometheus-operator keeps one file per object.
            groups.append({**group, "name": f"{obj['metadata']['namespace']}/{obj['metadata']['name']}/{group['name']}"})
    return {"groups": groups}


def write_if_changed(path: Path, data: object) -> bool:
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def sync(sources: dict[str, Source], addresses: dict[str, str], directory: Path, url: str,
         through_api_server: bool = False) -> None:
    reload = False
    for context, source in sources.items():
        try:
            write_if_changed(directory / "targets" / f"{context}.json",
                             targets(source, addresses[context], context, through_api_server))
            reload |= write_if_changed(directory / "rules" / f"{context}.yml", rules(source))
        except Exception as err:  # a cluster that does not answer keeps its last files
            log(f"{context}: {err}")
    if reload:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/-/reload", method="POST"), timeout=10)
        except OSError as err:
            log(f"Prometheus at {url} did not reload its rules: {err}")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, status: int, body: bytes, kind: str = "text/plain; version=0.0.4") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 (http.server's name)
        source: Source = self.server.source  # type: ignore[attr-defined]
        parts = [unquote(p) for p in urlparse(self.path).path.split("/") if p]
        try:
            if parts == ["metrics"]:
                self.reply(200, cluster_series(source).text())
            elif len(parts) >= 4 and parts[0] == "pods":
                pod = next((p for p in live(source.objects()["pods"])
                            if p["metadata"]["namespace"] == parts[1] and p["metadata"]["name"] == parts[2]),
                           None)
                if pod is None:
                    self.reply(404, b"no such pod\n")
                elif (value_of(source.cluster.values(), pod, "up") or "1") in ("0", "0.0"):
                    self.reply(503, b"down (lab-metrics: up=0)\n")
                else:
                    self.reply(200, pod_series(source, pod).text())
            elif parts == ["healthz"]:
                self.reply(200, b"ok\n")
            else:
                self.reply(404, b"not found\n")
        except Exception as err:  # a scrape must never kill the server
            self.reply(500, f"lab exporter: {err}\n".encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--dir", required=True, help="the lab's Prometheus directory (targets/, rules/)")
    parser.add_argument("--ports-file", required=True, help="written once every port listens")
    parser.add_argument("--prometheus-url", required=True, help="told to reload when rules change")
    parser.add_argument("--through-api-server", action="store_true",
                        help="the ServiceMonitors' targets are the pods' own /metrics through each cluster's "
                        "API server (pod proxy), for clusters whose pods really run (kind)")
    parser.add_argument("clusters", nargs="+", metavar="CONTEXT=REGION")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.kubeconfig).read_text())
    directory = Path(args.dir)
    for sub in ("targets", "rules"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix="exporter-", dir=directory)
    try:
        sources, addresses = {}, {}
        for item in args.clusters:
            context, region = item.split("=", 1)
            sources[context] = Source(Cluster(config, context, tmpdir), region)
            server = Server(("127.0.0.1", 0), Handler)
            server.source = sources[context]  # type: ignore[attr-defined]
            addresses[context] = f"127.0.0.1:{server.server_address[1]}"
            threading.Thread(target=server.serve_forever, daemon=True).start()
        tmp = args.ports_file + ".tmp"
        Path(tmp).write_text(json.dumps(addresses))
        os.replace(tmp, args.ports_file)
        log(f"serving {addresses}")
        scraped = ({c: f"{s.cluster.host}:{s.cluster.port}" for c, s in sources.items()}
                   if args.through_api_server else addresses)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        while True:
            sync(sources, scraped, directory, args.prometheus_url, args.through_api_server)
            if stop.wait(SYNC_SECONDS):
                return 0
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
