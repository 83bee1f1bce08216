#!/usr/bin/env python3
"""The lab's Prometheus on the kind clusters (docs/kind.md): the Super-Node stand-in's real /metrics.

On the kind clusters the pods run (images/super-node-standin serves /metrics on the chart's metrics
port), but their addresses live on the clusters' Docker network, unroutable from this machine. So
Prometheus scrapes each pod through its cluster's API server, whose pod proxy reaches it:
https://127.0.0.1:APIPORT/api/v1/namespaces/NS/pods/POD:PORT/proxy/metrics, with the CA and the client
certificate of the scenario's kubeconfig. The rest is the kwok lab's machinery (lab/icnlab.py,
lab/exporter.py): the targets are what the chart's ServiceMonitors select (exporter.py
--through-api-server; job = the headless Service's name, labels namespace, service, pod, endpoint,
region, cluster, and instance = the pod's address as prometheus-operator sets it), the rules are the
chart's PrometheusRules as deployed, and the exporter's reading of the clusters' objects stands in for
kube-state-metrics.

    lab/kind/prometheus.py crds    prometheus-operator's CRDs in every cluster (create.yml, before the
                                   chart: it renders its ServiceMonitor and PrometheusRule when served)
    lab/kind/prometheus.py start   the exporter and Prometheus (every 5 s); prints Prometheus' URL
    lab/kind/prometheus.py stop    stops both, by their recorded pids

ICN_LAB_DIR is the scenario's state dir (.kind-molecule by default; never the kwok lab's .lab): its
kubeconfig (JSON, one context icn-<region> per cluster, as create.yml writes it) and prometheus/ (the
config, 0600 as it holds the client key, data, logs, pids.json), which molecule destroy removes.
"""
from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# Resolved: the pids' command lines name it, and molecule's env spells it with "..".
os.environ["ICN_LAB_DIR"] = str(Path(os.environ.get("ICN_LAB_DIR") or ROOT / ".kind-molecule").resolve())
if Path(os.environ["ICN_LAB_DIR"]) == (ROOT / ".lab").resolve():
    sys.exit("lab/kind/prometheus.py: ICN_LAB_DIR is the kwok lab's .lab, not a kind scenario's state dir")
sys.path.insert(0, str(ROOT / "lab"))
import icnlab  # noqa: E402  (after ICN_LAB_DIR: its paths follow it)
from metrics_api import context_entries  # noqa: E402

PIDS = icnlab.PROMETHEUS_DIR / "pids.json"


def clusters() -> tuple[dict, dict[str, list[str]]]:
    """The kubeconfig and {context: [region]} of the scenario's clusters."""
    config = json.loads(icnlab.KUBECONFIG.read_text())
    return config, {c["name"]: [c["name"].removeprefix("icn-")] for c in config["contexts"]}


def tls_config(config: dict, context: str) -> dict:
    """Prometheus' tls_config for the API server of `context`: its CA, the client certificate and key,
    inline (prometheus.yml is written 0600)."""
    cluster, user = context_entries(config, context)

    def pem(entry: dict, field: str) -> str:
        return base64.b64decode(entry[f"{field}-data"]).decode()
    return {"ca": pem(cluster, "certificate-authority"), "cert": pem(user, "client-certificate"),
            "key": pem(user, "client-key")}


def crds() -> None:
    tools, crd_dir = icnlab.Tools(), icnlab.tool_dirs(("promcrds",))["PROMETHEUS_CRDS"]
    _, region_of = clusters()
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda c: icnlab.install_monitoring_crds(tools, c, crd_dir), region_of))
    icnlab.log(f"prometheus-operator's CRDs in {', '.join(region_of)}")


def save(pids: dict[str, int]) -> None:
    PIDS.write_text(json.dumps(pids))


def start() -> str:
    stop()
    shutil.rmtree(icnlab.PROMETHEUS_DIR, ignore_errors=True)  # a fresh TSDB, no stale targets or rules
    icnlab.PROMETHEUS_DIR.mkdir(parents=True)
    config, region_of = clusters()
    bin_dir = icnlab.tool_dirs(("prometheus",))["PROMETHEUS_BIN"]
    port = icnlab.free_port()
    url = f"http://127.0.0.1:{port}"
    pids: dict[str, int] = {}
    pids["exporter"], exporters = icnlab.start_exporter(url, region_of, "--through-api-server")
    save(pids)
    # Prometheus reads the rules files when it starts: wait for the exporter's first sync, whose
    # request to reload would otherwise reach no Prometheus yet and be lost.
    rules = [icnlab.PROMETHEUS_DIR / "rules" / f"{c}.yml" for c in region_of]
    deadline = time.monotonic() + 30
    while not all(r.exists() for r in rules):
        if time.monotonic() > deadline or not icnlab.alive(pids["exporter"]):
            raise icnlab.LabError(f"the exporter wrote no rules for every cluster in 30 s "
                                  f"(see {icnlab.PROMETHEUS_DIR / 'exporter.log'})")
        time.sleep(0.2)
    tls = {c: tls_config(config, c) for c in region_of}
    proc = icnlab.spawn_prometheus(bin_dir, icnlab.prometheus_config(exporters, region_of, tls), port)
    pids["prometheus"] = proc.pid
    save(pids)
    icnlab.wait_http(f"{url}/-/ready", proc, "the kind clusters' Prometheus",
                     icnlab.PROMETHEUS_DIR / "prometheus.log")
    icnlab.log(f"Prometheus: {url}, the pods through their API servers (pids {pids}; {icnlab.PROMETHEUS_DIR})")
    return url


def stop() -> None:
    """Stops what start() started, by the pids it recorded (each only if its command line still
    names this state dir: a pid is not reused for someone else's process)."""
    if not PIDS.exists():
        return
    for what, pid in json.loads(PIDS.read_text()).items():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(icnlab.PROMETHEUS_DIR) in cmdline and icnlab.alive(pid):
            icnlab.log(f"stopping the kind clusters' {what} (pid {pid})")
            icnlab.stop_pid(pid)
    PIDS.unlink()


def main(argv: list[str] | None = None) -> int:
    command = (argv if argv is not None else sys.argv[1:]) or [""]
    try:
        if command == ["crds"]:
            crds()
        elif command == ["start"]:
            try:
                print(start(), flush=True)
            except BaseException:
                stop()
                raise
        elif command == ["stop"]:
            stop()
        else:
            print(__doc__.split("\n\n")[2], file=sys.stderr)
            return 2
    except icnlab.LabError as err:
        icnlab.log(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
