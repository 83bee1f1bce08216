#!/usr/bin/env python3
"""The lab's metrics API: per-pod values that tests set, served to the real HPA controller.

One process serves every cluster of the lab, one HTTPS port per cluster. icnlab.py registers
each port in its cluster as the APIServices v1beta1.metrics.k8s.io (pod CPU and memory, what
metrics-server serves) and, in a lab without Prometheus, v1beta2/v1beta1.custom.metrics.k8s.io
(Pods metrics such as network_bandwidth_utilization, what prometheus-adapter serves; with
Prometheus, the real adapter does: lab/adapter.py). kube-apiserver's aggregator
proxies to it (--enable-aggregator-routing: straight to the Endpoints address, as there is no
kube-proxy), and kube-controller-manager's HPA controller reads it like any metrics API.

The values live in the cluster, in the ConfigMap kube-system/lab-metrics, so a test sets them
through the real API. For pod P (controlled by owner O, e.g. its StatefulSet) of namespace N, the
value of metric M is the first of these keys that is set:

    N.P.M       one pod                 icn.icn-super-node-eu-west-0.network_bandwidth_utilization
    N.O.M       every pod of an owner   icn.icn-super-node-eu-west.network_bandwidth_utilization
    N.tag-T.M   every pod of image tag T icn.tag-v1.3.0.icn_super_node_errors_total
    N.M         every pod of namespace  icn.cpu
    M           every pod               network_bandwidth_utilization

Values are Kubernetes quantities ("900M", "250m", "1Gi"). cpu and memory are the pod's usage
(metrics.k8s.io), either a quantity or a percentage of the pod's requests ("10%", "90%": the
HPA's CPU utilization); every other name is a custom metric. A pod with no value gets no sample, as
with a real adapter whose series is missing.

    metrics_api.py --kubeconfig KUBECONFIG --cert CRT --key KEY --ports-file OUT CONTEXT...

Only the standard library is used, like icnlab.py.
"""
from __future__ import annotations

import argparse
import base64
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from urllib.parse import parse_qs, quote, unquote, urlparse

CONFIGMAP = ("kube-system", "lab-metrics")
RESOURCE_METRICS = ("cpu", "memory")
QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i|%)?$")
SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "P": 1e15, "E": 1e18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
          "Ei": 2**60}
CUSTOM_VERSIONS = ("v1beta1", "v1beta2")
CACHE_SECONDS = 1.0


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def context_entries(config: dict, context: str) -> tuple[dict, dict]:
    """The cluster and user entries of a context in a (JSON) kubeconfig."""
    ctx = next(c["context"] for c in config["contexts"] if c["name"] == context)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
    return cluster, user


class Cluster:
    """A tiny client of one lab cluster's API server, from the lab's (JSON) kubeconfig."""

    def __init__(self, config: dict, context: str, tmpdir: str):
        cluster, user = context_entries(config, context)
        self.context = context
        url = urlparse(cluster["server"])
        self.host, self.port = url.hostname, url.port or 443

        def pem(entry: dict, field: str) -> str:
            if entry.get(f"{field}-data"):
                path = os.path.join(tmpdir, f"{context}-{field}.pem")
                with open(path, "wb") as handle:
                    handle.write(base64.b64decode(entry[f"{field}-data"]))
                return path
            return entry[field]

        self.ssl = ssl.create_default_context(cafile=pem(cluster, "certificate-authority"))
        self.ssl.check_hostname = False
        self.ssl.load_cert_chain(pem(user, "client-certificate"), pem(user, "client-key"))
        self._cache: tuple[float, dict] = (0.0, {})
        self._lock = threading.Lock()
        self._conn: http.client.HTTPSConnection | None = None
        self._conn_lock = threading.Lock()

    def get(self, path: str) -> dict | None:
        # One kept-alive connection per cluster (a TLS handshake per request cost more CPU than
        # everything else here); a request that finds it closed reconnects once.
        with self._conn_lock:
            for attempt in (1, 2):
                if self._conn is None:
                    self._conn = http.client.HTTPSConnection(self.host, self.port,
                                                             context=self.ssl, timeout=10)
                try:
                    self._conn.request("GET", path, headers={"Accept": "application/json"})
                    resp = self._conn.getresponse()
                    body = resp.read()
                    break
                except (OSError, http.client.HTTPException):
                    self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise RuntimeError(f"{self.context} GET {path}: HTTP {resp.status}")
        return json.loads(body)

    def values(self) -> dict[str, str]:
        with self._lock:
            stamp, data = self._cache
            if time.monotonic() - stamp < CACHE_SECONDS:
                return data
            cm = self.get(f"/api/v1/namespaces/{CONFIGMAP[0]}/configmaps/{CONFIGMAP[1]}")
            data = {k: v.strip() for k, v in ((cm or {}).get("data") or {}).items()
                    if QUANTITY.match(v.strip())}
            self._cache = (time.monotonic(), data)
            return data

    def pods(self, namespace: str, name: str | None, selector: str | None) -> list[dict]:
        base = f"/api/v1/namespaces/{quote(namespace)}/pods"
        if name and name != "*":
            pod = self.get(f"{base}/{quote(name)}")
            pods = [pod] if pod else []
        else:
            query = f"?labelSelector={quote(selector)}" if selector else ""
            pods = (self.get(base + query) or {}).get("items") or []
        return [p for p in pods if not p["metadata"].get("deletionTimestamp")
                and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]


def value_of(values: dict[str, str], pod: dict, metric: str) -> str | None:
    meta = pod["metadata"]
    ns, image = meta["namespace"], pod["spec"]["containers"][0].get("image", "")
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    owners = [o["name"] for o in meta.get("ownerReferences") or [] if o.get("controller")]
    keys = [f"{ns}.{meta['name']}.{metric}", *(f"{ns}.{o}.{metric}" for o in owners)]
    keys += [f"{ns}.tag-{tag}.{metric}"] if tag else []
    keys += [f"{ns}.{metric}", metric]
    for key in keys:
        if key in values:
            return values[key]
    return None


def resource_list(group_version: str, resources: list[dict]) -> dict:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": resources}


def custom_resources(values: dict[str, str]) -> list[dict]:
    names = {k.rsplit(".", 1)[-1] for k in values} - set(RESOURCE_METRICS)
    return [{"name": f"pods/{n}", "singularName": "", "namespaced": True,
             "kind": "MetricValueList", "verbs": ["get"]} for n in sorted(names)]


METRICS_RESOURCES = [
    {"name": "pods", "singularName": "", "namespaced": True, "kind": "PodMetrics",
     "verbs": ["get", "list"]},
    {"name": "nodes", "singularName": "", "namespaced": False, "kind": "NodeMetrics",
     "verbs": ["get", "list"]},
]


def parse_quantity(text: str) -> float:
    m = re.match(r"^([+-]?[\d.]+(?:[eE][+-]?\d+)?)([a-zA-Z]*)$", text)
    if not m or m.group(2) not in SUFFIX:
        raise ValueError(f"not a quantity: {text}")
    return float(m.group(1)) * SUFFIX[m.group(2)]


def usage_of(values: dict[str, str], pod: dict, resource: str) -> str | None:
    """The pod's usage of cpu or memory: the value set, or its percentage of the pod's requests."""
    value = value_of(values, pod, resource)
    if value is None or not value.endswith("%"):
        return value
    requested = sum(parse_quantity(((c.get("resources") or {}).get("requests") or {})
                                   .get(resource, "0")) for c in pod["spec"]["containers"])
    used = requested * float(value[:-1]) / 100
    return f"{round(used * 1000)}m" if resource == "cpu" else str(round(used))


def pod_metrics(values: dict[str, str], pod: dict) -> dict | None:
    usage = {m: usage_of(values, pod, m) for m in RESOURCE_METRICS}
    if any(v is None for v in usage.values()):
        return None
    containers = []
    for i, container in enumerate(pod["spec"]["containers"]):
        # The pod's usage is its first container's; the HPA sums the containers of a pod.
        containers.append({"name": container["name"],
                           "usage": usage if i == 0 else {"cpu": "0", "memory": "0"}})
    meta = pod["metadata"]
    return {"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "labels": meta.get("labels") or {}, "creationTimestamp": now()},
            "timestamp": now(), "window": "5s", "containers": containers}


def custom_item(version: str, pod: dict, metric: str, value: str) -> dict:
    meta = pod["metadata"]
    described = {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                 "apiVersion": "/v1"}
    if version == "v1beta1":
        return {"describedObject": described, "metricName": metric, "timestamp": now(),
                "window": 30, "value": value}
    return {"describedObject": described, "metric": {"name": metric}, "timestamp": now(),
            "windowSeconds": 30, "value": value}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "icn-lab-metrics"

    def log_message(self, fmt, *args):  # quiet: the HPA asks every 5 s per HPA
        pass

    def send_json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self) -> None:
        self.send_json(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "reason": "NotFound", "code": 404,
                             "message": f"the lab's metrics API does not serve {self.path}"})

    def do_GET(self):  # noqa: N802 (http.server's name)
        try:
            self.route()
        except Exception as err:  # a request must never kill the server
            self.send_json(500, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "code": 500, "message": f"lab metrics API: {err}"})

    def route(self) -> None:
        cluster: Cluster = self.server.cluster  # type: ignore[attr-defined]
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        parts = [unquote(p) for p in url.path.split("/") if p]
        if url.path in ("/healthz", "/readyz", "/livez"):
            self.send_json(200, {"status": "ok"})
            return
        if parts[:2] == ["apis", "metrics.k8s.io"] and len(parts) >= 3 and parts[2] == "v1beta1":
            self.metrics(cluster, parts[3:], query)
            return
        if (parts[:2] == ["apis", "custom.metrics.k8s.io"] and len(parts) >= 3
                and parts[2] in CUSTOM_VERSIONS):
            self.custom(cluster, parts[2], parts[3:], query)
            return
        self.not_found()

    def metrics(self, cluster: Cluster, rest: list[str], query: dict) -> None:
        if not rest:
            self.send_json(200, resource_list("metrics.k8s.io/v1beta1", METRICS_RESOURCES))
            return
        if rest == ["nodes"]:
            self.send_json(200, {"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                                 "metadata": {}, "items": []})
            return
        if len(rest) in (3, 4) and rest[0] == "namespaces" and rest[2] == "pods":
            values = cluster.values()
            name = rest[3] if len(rest) == 4 else None
            items = [m for m in (pod_metrics(values, p) for p in
                                 cluster.pods(rest[1], name, query.get("labelSelector"))) if m]
            if name:
                if items:
                    self.send_json(200, items[0])
                else:
                    self.not_found()
                return
            self.send_json(200, {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                                 "metadata": {}, "items": items})
            return
        self.not_found()

    def custom(self, cluster: Cluster, version: str, rest: list[str], query: dict) -> None:
        group_version = f"custom.metrics.k8s.io/{version}"
        if not rest:
            self.send_json(200, resource_list(group_version, custom_resources(cluster.values())))
            return
        # namespaces/N/pods/NAME|*/METRIC
        if len(rest) == 5 and rest[0] == "namespaces" and rest[2] == "pods":
            metric = rest[4]
            values = cluster.values()
            items = []
            for pod in cluster.pods(rest[1], rest[3], query.get("labelSelector")):
                value = value_of(values, pod, metric)
                if value is not None:
                    items.append(custom_item(version, pod, metric, value))
            if rest[3] != "*" and not items:
                self.not_found()
                return
            self.send_json(200, {"kind": "MetricValueList", "apiVersion": group_version,
                                 "metadata": {}, "items": items})
            return
        self.not_found()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--cert", required=True, help="serving certificate (PEM)")
    parser.add_argument("--key", required=True, help="its key (PEM)")
    parser.add_argument("--ports-file", required=True,
                        help="written once every port listens: {context: port}")
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("contexts", nargs="+")
    args = parser.parse_args(argv)
    with open(args.kubeconfig) as handle:
        config = json.load(handle)
    # The clusters' client keys, written out for the TLS library: inside the lab's own folder (which
    # `icnlab down` removes) and removed on SIGTERM, never left in /tmp.
    tmpdir = tempfile.mkdtemp(prefix="metrics-api-", dir=os.path.dirname(os.path.abspath(args.ports_file)))
    try:
        return serve(args, config, tmpdir)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def serve(args: argparse.Namespace, config: dict, tmpdir: str) -> int:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    ports = {}
    for context in args.contexts:
        server = Server((args.bind, 0), Handler)
        # The handshake happens in the request's thread, so a slow client holds up no other.
        server.socket = tls.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
        server.cluster = Cluster(config, context, tmpdir)  # type: ignore[attr-defined]
        ports[context] = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = args.ports_file + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(ports, handle)
    os.replace(tmp, args.ports_file)
    print(f"lab metrics API: {ports}", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
