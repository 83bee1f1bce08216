"""Helpers the tests share to talk to the lab's clusters (real API servers, no mocks)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from chartkit import REGIONS  # noqa: F401  (the catalogue's regions, in order, for the tests)

ROOT = Path(__file__).resolve().parent.parent
LAB_DIR = Path(os.environ.get("ICN_LAB_DIR", ROOT / ".lab"))


def lab_state(lab_dir: Path = LAB_DIR) -> dict | None:
    state = lab_dir / "lab.json"
    return json.loads(state.read_text()) if state.exists() else None


def icnlab(*args: str, lab_dir: Path = LAB_DIR, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, ICN_LAB_DIR=str(lab_dir))
    return subprocess.run([sys.executable, str(ROOT / "lab" / "icnlab.py"), *args], env=env,
                          text=True, capture_output=True, timeout=timeout)


class Cluster:
    """The typed API clients of one lab context."""

    def __init__(self, context: str, kubeconfig: Path | None = None):
        self.context = context
        self.kubeconfig = kubeconfig or LAB_DIR / "kubeconfig"
        api = config.new_client_from_config(config_file=str(self.kubeconfig), context=context)
        api.configuration.retries = 2
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self.storage = client.StorageV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def __repr__(self) -> str:
        return f"Cluster({self.context})"

    # ---- reads
    def pods(self, namespace: str, selector: str = "") -> list:
        return self.core.list_namespaced_pod(namespace, label_selector=selector,
                                             _request_timeout=10).items

    def ready_pods(self, namespace: str, selector: str = "") -> list:
        return [p for p in self.pods(namespace, selector) if is_ready(p)]

    # ---- the lab's metrics API
    def set_pod_metrics(self, values: dict[str, str | None]) -> None:
        """Sets values the lab's metrics API serves (lab/metrics_api.py: keys `[namespace.[pod or
        owner.]]metric`, in the ConfigMap kube-system/lab-metrics); None removes a key."""
        self.core.patch_namespaced_config_map("lab-metrics", "kube-system", {"data": values})

    # ---- namespaces that tests own
    def create_namespace(self, name: str) -> None:
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name=name, labels={"icn.network/test": "true"})))

    def delete_namespace(self, name: str, timeout: float = 120) -> None:
        """Deletes a test namespace and hands its lab volumes back to the pool."""
        try:
            self.core.delete_namespace(name)
        except ApiException as err:
            if err.status != 404:
                raise
        wait_for(lambda: not _exists(lambda: self.core.read_namespace(name)), timeout,
                 f"namespace {name} to go away in {self.context}")
        self.recycle_volumes(namespace=name)

    def recycle_volumes(self, namespace: str) -> None:
        """Released lab volumes of a test namespace become Available again (lab-only)."""
        for pv in self.core.list_persistent_volume(
                label_selector="app.kubernetes.io/managed-by=icn-lab").items:
            ref = pv.spec.claim_ref
            if pv.status.phase == "Released" and ref and ref.namespace == namespace:
                self.core.patch_persistent_volume(pv.metadata.name, {"spec": {"claimRef": None}})


def _exists(read: Callable) -> bool:
    try:
        read()
        return True
    except ApiException as err:
        if err.status == 404:
            return False
        raise


def is_ready(pod) -> bool:
    if pod.metadata.deletion_timestamp is not None:
        return False
    for cond in pod.status.conditions or []:
        if cond.type == "Ready":
            return cond.status == "True"
    return False


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.5):
    """Polls predicate until it returns something truthy; fails the test naming what it waited for."""
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except ApiException as err:  # a transient API error is retried until the deadline
            last_err = err
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}"
                         + (f" (last error: {last_err})" if last_err else ""))


def snapshot(clusters: dict[str, "Cluster"], namespace: str = "icn") -> dict:
    """What a run could have changed, per cluster: objects with their uid and generation (or
    resourceVersion where the API keeps no generation). Equal snapshots: nothing was created,
    deleted or changed."""

    def ident(obj, use_generation=True):
        meta = obj.metadata
        version = meta.generation if use_generation and meta.generation else meta.resource_version
        return (meta.name, meta.uid, version)

    out = {}
    for name, c in clusters.items():
        ns_exists = _exists(lambda: c.core.read_namespace(namespace))
        state = {
            "namespaces": sorted(ident(n, False) for n in c.core.list_namespace().items
                                 if not n.metadata.name.startswith("t-")),
            "storageclasses": sorted(ident(s, False) for s in c.storage.list_storage_class().items),
        }
        if ns_exists:
            state.update({
                "secrets": sorted(ident(s, False) for s in c.core.list_namespaced_secret(namespace).items),
                "configmaps": sorted(ident(s, False) for s in c.core.list_namespaced_config_map(namespace).items),
                "services": sorted(ident(s, False) for s in c.core.list_namespaced_service(namespace).items),
                "statefulsets": sorted(ident(s) for s in c.apps.list_namespaced_stateful_set(namespace).items),
                "pdbs": sorted(ident(s) for s in c.policy.list_namespaced_pod_disruption_budget(namespace).items),
                # The HPA controller rewrites an HPA's status on its own: compare what we own.
                "hpas": sorted((h.metadata.name, h.metadata.uid, repr(h.spec)) for h in
                               c.autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items),
                "pvcs": sorted((p.metadata.name, p.metadata.uid) for p in
                               c.core.list_namespaced_persistent_volume_claim(namespace).items),
                "pods": sorted((p.metadata.name, p.metadata.uid) for p in c.pods(namespace)),
            })
        out[name] = state
    return out


def unreachable_kubeconfig(tmp_path: Path, context: str) -> Path:
    """A copy of the lab's kubeconfig in which `context`'s API server is a port where nothing
    listens: that region is unreachable, the others are as they were."""
    import yaml
    config = yaml.safe_load((LAB_DIR / "kubeconfig").read_text())
    for cluster in config["clusters"]:
        if cluster["name"] == context:
            cluster["cluster"]["server"] = "https://127.0.0.1:1"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


# ---- what the rollout tests watch (namespace icn)
NS = "icn"


def tag_of(image: str) -> str:
    return image.rsplit(":", 1)[1]


def region_tags(lab) -> dict[str, set]:
    return {r: {tag_of(p.spec.containers[0].image) for p in c.pods(NS, f"icn.network/region={r}")}
            for r, c in lab.items()}


def release_revision(c, region) -> int:
    secrets = c.core.list_namespaced_secret(
        NS, label_selector=f"owner=helm,name=icn-super-node-{region}").items
    return max(int(s.metadata.labels["version"]) for s in secrets)


class Watcher:
    """Samples every region about twice a second for as long as a run lasts."""

    def __init__(self, lab):
        self.lab = lab
        self.samples: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample_region(self, region, c, out):
        pods = c.pods(NS, f"icn.network/region={region}")
        out[region] = {
            "ready": sum(1 for p in pods if is_ready(p)),
            "revisions": {p.metadata.labels.get("controller-revision-hash") for p in pods},
            "tags": {tag_of(p.spec.containers[0].image) for p in pods},
        }

    def _loop(self):
        while not self._stop.is_set():
            started = time.monotonic()
            sample: dict = {}
            threads = [threading.Thread(target=self._sample_region, args=(r, c, sample))
                       for r, c in self.lab.items()]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.samples.append((started, sample))
            self._stop.wait(max(0.0, 0.5 - (time.monotonic() - started)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def first_seen(self, tag: str) -> dict[str, float]:
        seen = {}
        for t, sample in self.samples:
            for region, s in sample.items():
                if tag in s["tags"] and region not in seen:
                    seen[region] = t
        return seen




def pump(src: socket.socket, dst: socket.socket) -> None:
    """Copies src to dst until either side closes, then shuts both down."""
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Relay:
    """A TCP relay on 127.0.0.1 to one address (a server of the lab's), that a test can cut: from then
    on its port refuses connections and the open ones are dropped, as when that server goes down."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # cut
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            self.open += [conn, upstream]
            threading.Thread(target=pump, args=(conn, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()

    def cut(self):
        self.listener.close()
        for sock in self.open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
