# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The fleet's rollout lock: one coordination.k8s.io/v1 Lease in every cluster a run touches.

A run takes the Lease of every cluster before its first write, all or none: if one is held by a
live run, the ones already taken are given back and the run is refused, naming the holder. A
holder that stopped renewing (its controller was killed, its laptop lost) is taken over once its
lease duration has passed since the last renewal, with a warning; ``break_lock`` takes it at once.

While the run lives, a small detached process (the renewer, started by the module) renews every
Lease a third of the duration; it watches the process that runs the playbook, and when that one
ends, for whatever reason, it gives the Leases back and exits. A run that ends well also gives them
back itself (state=released), at once.

The decisions (decide) are pure functions over the Lease JSON, tested without a cluster.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import quote

from ansible_collections.icn.super_node.plugins.module_utils.kube import KubeClient, KubeError

LEASE_NAME = "icn-super-node-rollout"
HOLDER_ANNOTATION = "icn.network/rollout-holder"
RENEWER_ANNOTATION = "icn.network/rollout-renewer-pid"
API = "/apis/coordination.k8s.io/v1"


class LockHeld(Exception):
    """Another live run holds a Lease; the message names it."""


def now_micro() -> str:
    """A MicroTime as the API writes it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    text = value.replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def holder_of(lease: dict) -> dict:
    """Who holds the Lease, as its holder annotation says (identity only where it has none)."""
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    try:
        holder = json.loads(annotations.get(HOLDER_ANNOTATION) or "{}")
    except ValueError:
        holder = {}
    holder.setdefault("identity", (lease.get("spec") or {}).get("holderIdentity"))
    return holder


def describe(holder: dict) -> str:
    parts = [holder.get("identity") or "an unknown holder"]
    if holder.get("playbook"):
        parts.append(f"running {holder['playbook']}")
    if holder.get("target"):
        parts.append(f"({holder['target']})")
    if holder.get("started"):
        parts.append(f"since {holder['started']}")
    return " ".join(parts)


def decide(lease: dict | None, identity: str, break_lock: bool, now: float,
           host: str | None = None, alive=None) -> tuple[str, str | None]:
    """What to do with a cluster's Lease: ('create'|'renew'|'take'|'refuse', warning or reason).
    host and alive(pid): this controller's name and how to tell whether one of its processes
    lives; a holder on this same controller whose process is gone is taken over at once."""
    if lease is None:
        return "create", None
    spec = lease.get("spec") or {}
    holder = holder_of(lease)
    if not spec.get("holderIdentity"):
        return "take", None  # given back, left empty
    if spec["holderIdentity"] == identity:
        return "renew", None
    renewed = parse_time(spec.get("renewTime") or spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds") or 0
    age = now - renewed if renewed is not None else None
    if break_lock:
        return "take", f"broke the rollout lock held by {describe(holder)} (rollout_break_lock=true)"
    if (host and alive and holder.get("host") == host and isinstance(holder.get("pid"), int)
            and not alive(holder["pid"])):
        return "take", (f"took over the rollout lock of {describe(holder)}: that process has ended on "
                        f"this controller without giving it back")
    if age is None or age > duration:
        since = f"{age:.0f}s ago" if age is not None else "never"
        return "take", (f"took over the rollout lock of {describe(holder)}: it stopped renewing it "
                        f"(last renewal {since}, lease {duration}s)")
    return "refuse", (f"another rollout holds the lock: {describe(holder)}; last renewed "
                      f"{age:.0f}s ago, it expires {duration - age:.0f}s after its last renewal if "
                      f"its run is gone. Wait for it to finish, or take it at once with "
                      f"-e rollout_break_lock=true if you know that run is dead")


def lease_body(name: str, namespace: str, identity: str, holder: dict, duration: int,
               renewer_pid: int | None, previous: dict | None) -> dict:
    stamp = now_micro()
    metadata = {"name": name, "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "icn.super_node"},
                "annotations": {HOLDER_ANNOTATION: json.dumps(holder, sort_keys=True)}}
    if renewer_pid:
        metadata["annotations"][RENEWER_ANNOTATION] = str(renewer_pid)
    if previous is not None:
        metadata["resourceVersion"] = previous["metadata"]["resourceVersion"]
    transitions = ((previous or {}).get("spec") or {}).get("leaseTransitions") or 0
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": identity, "leaseDurationSeconds": int(duration),
                     "acquireTime": stamp, "renewTime": stamp,
                     "leaseTransitions": transitions + (1 if previous is not None else 0)}}


class ClusterLease:
    """The Lease of one cluster."""

    def __init__(self, cluster: dict, namespace: str, name: str = LEASE_NAME,
                 request_timeout: float = 10.0):
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.request_timeout = request_timeout
        self.path = f"{API}/namespaces/{quote(namespace)}/leases/{quote(name)}"
        self.where = f"context {cluster.get('context')}" if cluster.get("context") else "the current context"

    def client(self) -> KubeClient:
        return KubeClient(self.cluster.get("kubeconfig"), self.cluster.get("context"),
                          self.request_timeout)

    def read(self, kube: KubeClient) -> dict | None:
        return kube.get(self.path, f"reading Lease {self.namespace}/{self.name}", missing_ok=True)

    def acquire(self, identity: str, holder: dict, duration: int, break_lock: bool,
                renewer_pid: int | None = None) -> dict:
        """Takes the Lease; returns {action, warning}. Raises LockHeld or KubeError."""
        with self.client() as kube:
            for _ in range(3):  # a conflict means someone wrote it meanwhile: look again
                lease = self.read(kube)
                action, note = decide(lease, identity, break_lock, time.time(), holder.get("host"),
                                      pid_alive)
                if action == "refuse":
                    raise LockHeld(f"{self.where}: {note}")
                body = lease_body(self.name, self.namespace, identity, holder, duration,
                                  renewer_pid, lease)
                if action == "renew":  # ours already: keep its acquire time
                    body["spec"]["acquireTime"] = lease["spec"].get("acquireTime")
                    body["spec"]["leaseTransitions"] = lease["spec"].get("leaseTransitions") or 0
                try:
                    if lease is None:
                        kube.request("POST", f"{API}/namespaces/{quote(self.namespace)}/leases",
                                     f"creating Lease {self.namespace}/{self.name}", body=body)
                    else:
                        kube.request("PUT", self.path, f"writing Lease {self.namespace}/{self.name}",
                                     body=body)
                except KubeError as err:
                    if err.status == 409:
                        continue
                    raise
                return {"action": action, "warning": note}
        raise LockHeld(f"{self.where}: the rollout lock changed hands three times while it was being "
                       "taken; another run is starting: try again")

    def renew(self, kube: KubeClient, identity: str) -> bool:
        """Moves renewTime on; False when the Lease is no longer ours (broken or gone)."""
        lease = self.read(kube)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != identity:
            return False
        lease["spec"]["renewTime"] = now_micro()
        kube.request("PUT", self.path, f"renewing Lease {self.namespace}/{self.name}", body=lease)
        return True

    def release(self, identity: str) -> str | None:
        """Deletes the Lease when it is ours; returns the renewer's pid recorded on it.

        The delete is conditional on the resourceVersion just read, so that a Lease that another
        run took meanwhile is never deleted. Our own renewer may write it between the read and the
        delete (HTTP 409): then read it again and delete that version."""
        with self.client() as kube:
            for _ in range(5):
                lease = self.read(kube)
                if lease is None or (lease.get("spec") or {}).get("holderIdentity") != identity:
                    return None
                try:
                    kube.request("DELETE", self.path, f"deleting Lease {self.namespace}/{self.name}",
                                 body={"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {
                                     "resourceVersion": lease["metadata"]["resourceVersion"]}})
                except KubeError as err:
                    if err.status == 409:
                        continue
                    if err.status == 404:
                        return None
                    raise
                return ((lease.get("metadata") or {}).get("annotations") or {}).get(RENEWER_ANNOTATION)
        raise KubeError(f"{self.where}: Lease {self.namespace}/{self.name} kept changing while it was "
                        "being given back (five conflicts in a row)")


def in_parallel(function, leases: list) -> list:
    """function(lease) for every cluster at once; each result, or the exception it raised."""
    def call(lease):
        try:
            return function(lease)
        except Exception as err:  # noqa: BLE001 - reported per cluster by the caller
            return err
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(leases)))) as pool:
        return list(pool.map(call, leases))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) is gone for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# --------------------------------------------------------------------------- the renewer process

def renewer_main() -> None:
    """Reads its job as JSON on stdin: {clusters, namespace, name, identity, owner_pid, duration,
    request_timeout}; says 'ready' once, then renews until the owner is gone or the Leases are no
    longer ours, and gives them back when the owner is gone."""
    job = json.loads(sys.stdin.read())
    leases = [ClusterLease(c, job["namespace"], job["name"], job["request_timeout"])
              for c in job["clusters"]]
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    interval = max(1.0, job["duration"] / 3.0)
    next_renewal = time.monotonic() + interval
    while not stopping:
        if not pid_alive(job["owner_pid"]):
            in_parallel(lambda lease: lease.release(job["identity"]), leases)
            return
        if time.monotonic() >= next_renewal:
            def renew(lease):
                with lease.client() as kube:
                    return lease.renew(kube, job["identity"])
            ours = in_parallel(renew, leases)
            if not any(result is True or isinstance(result, Exception) for result in ours):
                return  # every Lease was broken or given back: nothing left to renew
            next_renewal = time.monotonic() + interval
        time.sleep(0.5)


def start_renewer(job: dict, timeout: float = 30.0) -> int:
    """Starts the renewer detached from the run's process group; returns its pid once it is
    ready. It imports this collection from where this file is (in-worker: the checkout)."""
    import subprocess
    root = os.path.abspath(__file__)
    for _ in range(5):  # .../ansible_collections/icn/super_node/plugins/module_utils/lease.py
        root = os.path.dirname(root)
    root = os.path.dirname(root)
    code = ("import sys; sys.path.insert(0, %r); from ansible_collections.icn.super_node.plugins."
            "module_utils.lease import renewer_main; renewer_main()" % root)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)
    proc.stdin.write(json.dumps(job).encode())
    proc.stdin.close()
    import select
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    if line.strip() != b"ready":
        proc.kill()
        raise KubeError(f"the rollout lock's renewer did not start (python {sys.executable})")
    return proc.pid
