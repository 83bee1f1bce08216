#!/usr/bin/env python3
"""Runs the real prometheus-adapter for each cluster of a lab with Prometheus, as its kubelet would.

kwok's pods run no process, so the lab's Deployment monitoring/prometheus-adapter (what the
prometheus-adapter Helm chart installs: a Deployment and the ConfigMap of its config.yaml) has a pod
that does nothing. This process runs the adapter that pod stands for, one per cluster, on this
machine:

  - it starts `prometheus-adapter` with the ConfigMap's config.yaml, against the lab's Prometheus,
    serving custom.metrics.k8s.io on the cluster's port (icnlab.py registers that port in the
    cluster as the APIServices v1beta1/v1beta2.custom.metrics.k8s.io, Service and Endpoints
    monitoring/prometheus-adapter);
  - like a Deployment's rollout, it restarts the adapter when the pod template changes (the
    monitoring role annotates it with the config's checksum), and only then reads the config
    again: a config change alone, without the annotation, changes nothing, as in a real cluster;
  - an adapter that exits is started again (after RESTART_SECONDS), like a container;
  - with no Deployment (a test deleted it), no adapter runs for that cluster.

The adapters authenticate the aggregator's requests with the cluster's CA (client and front-proxy)
and authorize them with SubjectAccessReviews, as in a cluster; they list pods with the cluster's
admin kubeconfig (the lab's one user). SIGTERM stops every adapter, then this process; an adapter
also gets SIGTERM if this process is killed.

    adapter.py --kubeconfig KUBECONFIG --bin ADAPTER --dir DIR --prometheus-url URL
               --ports-file OUT CONTEXT=CLUSTER_DIR ...

Only the standard library is used, like icnlab.py.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from metrics_api import Cluster  # noqa: E402

NAMESPACE, NAME = "monitoring", "prometheus-adapter"
CONFIG_KEY = "config.yaml"
SYNC_SECONDS = 2
RESTART_SECONDS = 2
# How often the adapter asks Prometheus which series exist: a Super-Node pod deployed after the
# adapter started is served within this time (the chart's default is 1m; the adapter's own, 10m).
RELIST = "15s"


def log(msg: str) -> None:
    print(f"[adapter] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM when this supervisor dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class Adapter:
    """One cluster's prometheus-adapter: its port, its files, its process."""

    def __init__(self, args: argparse.Namespace, cluster: Cluster, cluster_dir: Path, port: int):
        self.args, self.cluster, self.port = args, cluster, port
        self.kubeconfig = cluster_dir / "kubeconfig.yaml"
        self.ca = cluster_dir / "pki" / "ca.crt"
        self.dir = Path(args.dir) / cluster.context
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.template = ""  # the pod template the running adapter was started for
        self.exited_at = 0.0

    def desired(self) -> tuple[str, str] | None:
        """(the Deployment's pod template hash, the config) or None when there is no Deployment."""
        deploy = self.cluster.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}")
        if deploy is None or (deploy["spec"].get("replicas", 1) == 0):
            return None
        template = hashlib.sha256(json.dumps(deploy["spec"]["template"], sort_keys=True)
                                  .encode()).hexdigest()
        if template == self.template and self.running():
            return template, ""  # nothing to read: the running adapter is the wanted one
        cm = self.cluster.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps/{NAME}") or {}
        return template, (cm.get("data") or {}).get(CONFIG_KEY, "")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sync(self) -> None:
        want = self.desired()
        if want is None:
            if self.running():
                log(f"{self.cluster.context}: no Deployment {NAMESPACE}/{NAME}: stopping the adapter")
                self.stop()
            self.template = ""
            return
        template, config = want
        if template == self.template and self.running():
            return
        if self.proc is not None and self.proc.poll() is not None:
            if not self.exited_at:
                self.exited_at = time.monotonic()
                log(f"{self.cluster.context}: the adapter exited with {self.proc.returncode} "
                    f"(see {self.dir / 'adapter.log'})")
            if time.monotonic() - self.exited_at < RESTART_SECONDS and template == self.template:
                return
        self.stop()
        self.start(template, config)

    def start(self, template: str, config: str) -> None:
        (self.dir / "config.yaml").write_text(config or "rules: []\n")
        cmd = [self.args.bin, f"--config={self.dir / 'config.yaml'}",
               f"--prometheus-url={self.args.prometheus_url}", f"--metrics-relist-interval={RELIST}",
               f"--secure-port={self.port}", "--bind-address=0.0.0.0", f"--cert-dir={self.dir / 'certs'}",
               f"--lister-kubeconfig={self.kubeconfig}",
               f"--authentication-kubeconfig={self.kubeconfig}",
               f"--authorization-kubeconfig={self.kubeconfig}",
               f"--client-ca-file={self.ca}", f"--requestheader-client-ca-file={self.ca}",
               "--v=1"]
        out = open(self.dir / "adapter.log", "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                     preexec_fn=die_with_parent)
        out.close()
        self.template, self.exited_at = template, 0.0
        log(f"{self.cluster.context}: adapter pid {self.proc.pid} on port {self.port}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True, help="the lab's (JSON) kubeconfig")
    parser.add_argument("--bin", required=True, help="the prometheus-adapter binary")
    parser.add_argument("--dir", required=True, help="per cluster: its config, certs and log")
    parser.add_argument("--prometheus-url", required=True)
    parser.add_argument("--ports-file", required=True, help="written at start: {context: port}")
    parser.add_argument("clusters", nargs="+", metavar="CONTEXT=CLUSTER_DIR")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.kubeconfig).read_text())
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix="adapter-", dir=args.dir)
    adapters: list[Adapter] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        for item in args.clusters:
            context, cluster_dir = item.split("=", 1)
            adapters.append(Adapter(args, Cluster(config, context, tmpdir), Path(cluster_dir),
                                    free_port()))
        tmp = args.ports_file + ".tmp"
        Path(tmp).write_text(json.dumps({a.cluster.context: a.port for a in adapters}))
        os.replace(tmp, args.ports_file)
        while not stop.is_set():
            for adapter in adapters:
                try:
                    adapter.sync()
                except Exception as err:  # an API hiccup: try again at the next sync
                    log(f"{adapter.cluster.context}: {err}")
            stop.wait(SYNC_SECONDS)
        return 0
    finally:
        for adapter in adapters:
            adapter.stop()
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
