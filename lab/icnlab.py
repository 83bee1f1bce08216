#!/usr/bin/env python3
"""The ICN lab: one real Kubernetes control plane per region on this machine.

Each region is a kwokctl cluster (binary runtime) made of etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and the kwok controller, all built from
source by lab/build-tools.sh. kwok stands in for the kubelets: it keeps fake nodes
alive and moves pods through their lifecycle according to Stage objects that this
script writes into each cluster. lab/metrics_api.py, started here too, serves the metrics APIs
that the HPA controller reads (metrics.k8s.io; custom.metrics.k8s.io too without --prometheus),
from per-pod values that tests set in the ConfigMap kube-system/lab-metrics of each cluster. With
--prometheus, the lab also installs prometheus-operator's CRDs and runs lab/exporter.py (the series
of kube-state-metrics, the kubelets and the Super-Nodes themselves, and what prometheus-operator
would configure), one Prometheus server for every region (.lab/prometheus; its URL in
.lab/lab.json) and, through lab/adapter.py, one prometheus-adapter per cluster serving
custom.metrics.k8s.io from that Prometheus.

    icnlab.py up [--regions N] [--topology multi|single] [--ready-delay-ms MS] [--prometheus]
    icnlab.py status
    icnlab.py fault REGION --tag TAG      pods of image tag TAG in REGION never get Ready
    icnlab.py fault REGION --clear
    icnlab.py down

State lives under .lab/ at the repository root; .lab/kubeconfig has one context per
region, icn-<region> (icn-single for the single-cluster topology).

Only the standard library is used, so the lab runs before any virtualenv exists.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = Path(os.environ.get("ICN_LAB_DIR", ROOT / ".lab"))
KWOK_WORKDIR = LAB / "kwok"
KUBECONFIG = LAB / "kubeconfig"
STATE = LAB / "lab.json"



CHART_CATALOGUE = ROOT / "charts" / "super-node" / "regions.yaml"
# The lab's bigger catalogue: the chart's seven regions first, then fourteen more (lab/fleet.yaml).
FLEET_CATALOGUE = ROOT / "lab" / "fleet.yaml"


def catalogue_regions(path: Path = CHART_CATALOGUE) -> list[str]:
    """The regions, in order, of a region catalogue (the chart's regions.yaml by default: the one
    source). The lab starts the first N of them."""
    try:
        import yaml
    except ImportError:
        sys.exit(f"lab/icnlab.py reads {path.name} with PyYAML: run it with the "
                 "project's Python (`make venv`; .venv/bin/python lab/icnlab.py)")
    catalogue = yaml.safe_load(Path(path).read_text())
    return [str(entry["name"]) for entry in catalogue["regions"]]


def pick_catalogue(given: str | None, regions: int) -> Path:
    """The catalogue a lab of `regions` regions starts from: the one given, else the chart's when it
    has enough regions, else lab/fleet.yaml (said, so nobody takes its regions for production's)."""
    if given:
        return Path(given).resolve()
    if regions <= len(REGIONS):
        return CHART_CATALOGUE
    log(f"REGIONS={regions} is more than the chart's catalogue's {len(REGIONS)}: the lab's regions come "
        f"from {FLEET_CATALOGUE.relative_to(ROOT)} (the inventory {LAB / 'inventory'} names it)")
    return FLEET_CATALOGUE


REGIONS = catalogue_regions()
ZONE_SUFFIXES = ["a", "b"]
NODES_PER_REGION = {"multi": 8, "single": 4}  # single: 28 nodes in all
VOLUMES_PER_ZONE = {"multi": 8, "single": 4}
VOLUME_SIZE = "10Ti"
STORAGE_CLASS = "fast-ssd"
CSI_DRIVER = "disk.lab.icn.network"
BROKEN_SUFFIX = "-broken"
REGION_LABEL = "icn.network/region"


def log(msg: str) -> None:
    print(f"[lab] {msg}", file=sys.stderr, flush=True)


class LabError(RuntimeError):
    pass


# --------------------------------------------------------------------------- tools

def tool_dirs(tools: tuple[str, ...] = ("kwok", "etcd", "kubernetes")) -> dict[str, Path]:
    """Builds (or reuses from the cache) some of the lab's tools (default: the clusters');
    returns NAME -> its dir, as lab/build-tools.sh prints them."""
    out = subprocess.run(
        ["bash", str(ROOT / "lab" / "build-tools.sh"), *tools],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    dirs = {}
    for line in out.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            dirs[key] = Path(value)
    return dirs


def run(cmd: list[str], *, stdin: str | None = None, timeout: float = 120, env=None,
        check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, input=stdin, text=True, capture_output=True, timeout=timeout,
                          env=env)
    if check and proc.returncode != 0:
        raise LabError(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.strip()}")
    return proc


def read_versions() -> dict[str, str]:
    out = {}
    for line in (ROOT / "lab" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


class Tools:
    def __init__(self) -> None:
        d = tool_dirs()
        self.versions = read_versions()
        self.kwokctl = d["KWOK_BIN"] / "kwokctl"
        self.kwok = d["KWOK_BIN"] / "kwok"
        self.etcd = d["ETCD_BIN"] / "etcd"
        self.etcdctl = d["ETCD_BIN"] / "etcdctl"
        kube = d["KUBE_BIN"]
        self.apiserver = kube / "kube-apiserver"
        self.controller_manager = kube / "kube-controller-manager"
        self.scheduler = kube / "kube-scheduler"
        self.kubectl = kube / "kubectl"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KWOK_WORKDIR"] = str(KWOK_WORKDIR)
        # kwokctl picks component flags by version, and must never try to download a tool.
        env["KWOK_KUBE_VERSION"] = "v" + self.versions["K8S_VERSION"]
        env["KWOK_ETCD_VERSION"] = self.versions["ETCD_VERSION"]
        env["KWOK_KUBECTL_BINARY"] = str(self.kubectl)
        env["KWOK_ETCDCTL_BINARY"] = str(self.etcdctl)
        env["PATH"] = os.pathsep.join([str(self.kubectl.parent), str(self.kwokctl.parent),
                                       env.get("PATH", "")])
        return env

    def kubectl_cmd(self, context: str, *args: str) -> list[str]:
        return [str(self.kubectl), "--kubeconfig", str(KUBECONFIG), "--context", context,
                "--request-timeout=20s", *args]


# --------------------------------------------------------------------------- objects

def jq(key: str, operator: str, *values: str) -> dict:
    """A kwok selector requirement: a gojq expression compared with string values."""
    req = {"key": key, "operator": operator}
    if values:
        req["values"] = list(values)
    return {"jq": req}


def broken_jq(faults: list[dict], topology: str) -> str:
    """gojq that yields true for a pod that must never get Ready in this cluster."""
    terms = [f'endswith("{BROKEN_SUFFIX}")'] + [f'endswith(":{f["tag"]}")' for f in faults
                                                 if topology == "multi"]
    expr = f'([.spec.containers[].image | ({" or ".join(terms)})] | any)'
    if topology == "single":
        # One cluster holds every region: a fault applies to the pods of its region only.
        for fault in faults:
            expr += (f' or ((.metadata.labels["{REGION_LABEL}"] // "") == "{fault["region"]}"'
                     f' and ([.spec.containers[].image | endswith(":{fault["tag"]}")] | any))')
    return f"({expr})"


def pod_status_template(ready: bool) -> str:
    flag = "True" if ready else "False"
    reason = "" if ready else "ReadinessProbeFailed"
    return f"""{{{{ $now := Now }}}}
conditions:
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "True"
  type: Initialized
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "True"
  type: PodScheduled
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "{flag}"
  reason: "{reason}"
  type: Ready
- lastTransitionTime: {{{{ $now | Quote }}}}
  status: "{flag}"
  reason: "{reason}"
  type: ContainersReady
containerStatuses:
{{{{ range .spec.containers }}}}
- image: {{{{ .image | Quote }}}}
  name: {{{{ .name | Quote }}}}
  ready: {str(ready).lower()}
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{{{ $now | Quote }}}}
{{{{ end }}}}
{{{{ $hostIPs := NodeIPsWith .spec.nodeName }}}}
{{{{ with $hostIPs }}}}
hostIP: {{{{ index . 0 | Quote }}}}
hostIPs:
{{{{ range . }}}}
- ip: {{{{ . | Quote }}}}
{{{{ end }}}}
{{{{ end }}}}
{{{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}}}
{{{{ with $podIPs }}}}
podIP: {{{{ index . 0 | Quote }}}}
podIPs:
{{{{ range . }}}}
- ip: {{{{ . | Quote }}}}
{{{{ end }}}}
{{{{ end }}}}
phase: Running
startTime: {{{{ $now | Quote }}}}
"""


NODE_INIT_TEMPLATE = """{{ $now := Now }}
{{ $lastTransitionTime := or .metadata.creationTimestamp $now }}
conditions:
{{ range NodeConditions }}
- lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $lastTransitionTime | Quote }}
  message: {{ .message | Quote }}
  reason: {{ .reason | Quote }}
  status: {{ .status | Quote }}
  type: {{ .type  | Quote}}
{{ end }}
addresses:
{{ with NodeIP }}
- address: {{ . | Quote }}
  type: InternalIP
{{ end }}
{{ with NodeName }}
- address: {{ . | Quote }}
  type: Hostname
{{ end }}
{{ with NodePort }}
daemonEndpoints:
  kubeletEndpoint:
    Port: {{ . }}
{{ end }}
allocatable:
{{ YAML .status.allocatable 1 }}
capacity:
{{ YAML .status.capacity 1 }}
nodeInfo:
  architecture: amd64
  containerRuntimeVersion: kwok
  kernelVersion: kwok
  kubeProxyVersion: kwok
  kubeletVersion: kwok
  operatingSystem: linux
phase: Running
"""


def stages(ready_delay_ms: int, faults: list[dict], topology: str) -> list[dict]:
    """The kwok Stage objects of one cluster: how fake nodes and pods behave."""
    broken = broken_jq(faults, topology)
    pending = [jq(".metadata.deletionTimestamp", "DoesNotExist"),
               jq(".spec.nodeName", "Exists"),
               jq(".status.phase", "In", "Pending")]
    node_ready = '.status.conditions.[] | select( .type == "Ready" ) | .status'
    delay = {"durationMilliseconds": ready_delay_ms,
             "jitterDurationMilliseconds": ready_delay_ms + ready_delay_ms // 4}

    def stage(name, kind, selector, spec_rest, annotations=None):
        meta = {"name": name, "labels": {"app.kubernetes.io/part-of": "icn-lab"}}
        if annotations:
            meta["annotations"] = annotations
        spec = {"resourceRef": {"apiGroup": "v1", "kind": kind},
                "selector": {"matchExpressions": selector}}
        spec.update(spec_rest)
        return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": meta,
                "spec": spec}

    fault_note = {"lab.icn.network/faults": json.dumps(faults, sort_keys=True)}
    return [
        stage("node-initialize", "Node",
              [jq(node_ready, "NotIn", "True")],
              {"next": {"statusTemplate": NODE_INIT_TEMPLATE}}),
        stage("node-heartbeat-with-lease", "Node",
              [jq(".status.phase", "In", "Running"), jq(node_ready, "In", "True")],
              {"delay": {"durationMilliseconds": 600000, "jitterDurationMilliseconds": 610000},
               "next": {"statusTemplate": NODE_INIT_TEMPLATE}}),
        # A pod starts and turns Ready after the configured delay, as a probe would.
        stage("pod-ready", "Pod", pending + [jq(broken, "In", "false")],
              {"delay": delay, "next": {"statusTemplate": pod_status_template(True)}},
              fault_note),
        # A pod of a failing image runs but never passes its readiness probe.
        stage("pod-unready", "Pod", pending + [jq(broken, "In", "true")],
              {"delay": delay, "next": {"statusTemplate": pod_status_template(False)}},
              fault_note),
        # No kubelet: a deleted pod is gone shortly after it is asked to stop.
        stage("pod-delete", "Pod", [jq(".metadata.deletionTimestamp", "Exists")],
              {"delay": {"durationMilliseconds": 300, "jitterDurationMilliseconds": 500},
               "next": {"delete": True}}),
    ]


def zones_of(region: str) -> list[str]:
    return [f"{region}-{s}" for s in ZONE_SUFFIXES]


def nodes(regions: list[str], topology: str) -> list[dict]:
    out = []
    per_region = NODES_PER_REGION[topology]
    for region in regions:
        zones = zones_of(region)
        for i in range(per_region):
            name = f"{region}-node-{i}"
            out.append({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    "labels": {
                        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64", "type": "kwok",
                        "node-role.kubernetes.io/worker": "",
                        "topology.kubernetes.io/region": region,
                        "topology.kubernetes.io/zone": zones[i % len(zones)],
                    },
                },
                "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                           "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"}},
            })
    return out


def storage(regions: list[str], topology: str) -> list[dict]:
    """Storage standing in for cloud block volumes: zonal, 10Ti, never deleted."""
    objs: list[dict] = [
        {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
         "metadata": {"name": CSI_DRIVER},
         "spec": {"attachRequired": False, "podInfoOnMount": False,
                  "volumeLifecycleModes": ["Persistent"]}},
        # The same object the storage_class role creates for cloud "local".
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": STORAGE_CLASS,
                      "labels": {"app.kubernetes.io/managed-by": "icn-lab"}},
         "provisioner": "kubernetes.io/no-provisioner",
         "reclaimPolicy": "Retain", "volumeBindingMode": "WaitForFirstConsumer",
         "allowVolumeExpansion": True},
    ]
    for region in regions:
        for zone in zones_of(region):
            for i in range(VOLUMES_PER_ZONE[topology]):
                name = f"disk-{zone}-{i}"
                objs.append({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": name, "labels": {
                        "topology.kubernetes.io/region": region,
                        "topology.kubernetes.io/zone": zone,
                        "app.kubernetes.io/managed-by": "icn-lab"}},
                    "spec": {
                        "capacity": {"storage": VOLUME_SIZE},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": STORAGE_CLASS,
                        "volumeMode": "Filesystem",
                        "csi": {"driver": CSI_DRIVER, "volumeHandle": name, "fsType": "ext4"},
                        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "topology.kubernetes.io/zone", "operator": "In",
                             "values": [zone]}]}]}},
                    },
                })
    return objs


def as_list(objs: list[dict]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})


# --------------------------------------------------------------------------- state

def load_state() -> dict:
    if not STATE.exists():
        raise LabError("no lab is running here (run `make lab-up`)")
    return json.loads(STATE.read_text())


def save_state(state: dict) -> None:
    LAB.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(STATE)


def cluster_dir(name: str) -> Path:
    return KWOK_WORKDIR / "clusters" / name


def cluster_pids(name: str) -> dict[str, int]:
    pids = {}
    for f in sorted((cluster_dir(name) / "pids").glob("*.pid")):
        try:
            pids[f.stem] = int(f.read_text().strip())
        except ValueError:
            continue
    return pids


def alive(pid: int) -> bool:
    """True while any thread of the process still runs.

    A zombie is not alive, since this machine's init never reaps orphans. But the leader of a
    multi-threaded process (every Go binary) shows Z as soon as its own thread exits, while
    the other threads are still tearing down and still hold its sockets open: count it alive
    until /proc/PID/task lists no thread but the leader."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


# --------------------------------------------------------------------------- commands

def create_cluster(tools: Tools, name: str) -> None:
    kubeconfig = KWOK_WORKDIR / f"{name}.kubeconfig"
    cmd = [
        str(tools.kwokctl), "create", "cluster", "--name", name, "--runtime", "binary",
        "--kube-apiserver-binary", str(tools.apiserver),
        "--kube-controller-manager-binary", str(tools.controller_manager),
        "--kube-scheduler-binary", str(tools.scheduler),
        "--kwok-controller-binary", str(tools.kwok),
        "--etcd-binary", str(tools.etcd),
        "--enable-crds", "Stage",
        "--kubeconfig", str(kubeconfig),
        "--quiet-pull",
        # Quick HPA decisions, so the autoscaling tests need not wait 15 s per sync.
        "--extra-args", "kube-controller-manager=horizontal-pod-autoscaler-sync-period=5s",
        # One controller manager and one scheduler per cluster, and nothing restarts them: without
        # leader election they cannot lose a lease (and exit) when a loaded machine is slow to renew
        # it (the likely cause of a region whose StatefulSet was never observed, at load 20).
        "--extra-args", "kube-controller-manager=leader-elect=false",
        "--extra-args", "kube-scheduler=leader-elect=false",
        # No kube-proxy: the aggregator reaches the lab's metrics API at its Endpoints address.
        "--extra-args", "kube-apiserver=enable-aggregator-routing=true",
        "--wait", "3m",
    ]
    log(f"starting cluster {name}")
    proc = run(cmd, env=tools.env(), timeout=300, check=False)
    if proc.returncode != 0:
        raise LabError(f"kwokctl could not create {name}:\n{proc.stderr[-3000:]}")


def merge_kubeconfig(tools: Tools, clusters: dict[str, str]) -> None:
    """One kubeconfig with context icn-<region> per cluster (clusters: context -> kwok name)."""
    merged = {"apiVersion": "v1", "kind": "Config", "preferences": {},
              "clusters": [], "users": [], "contexts": [], "current-context": ""}
    for context, name in clusters.items():
        src = KWOK_WORKDIR / f"{name}.kubeconfig"
        view = json.loads(run([str(tools.kubectl), "config", "view", "--flatten", "-o", "json",
                               "--kubeconfig", str(src)]).stdout)
        cluster = view["clusters"][0]["cluster"]
        user = view["users"][0]["user"]
        merged["clusters"].append({"name": context, "cluster": cluster})
        merged["users"].append({"name": context, "user": user})
        merged["contexts"].append({"name": context, "context": {"cluster": context, "user": context}})
        merged["current-context"] = merged["current-context"] or context
    tmp = KUBECONFIG.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(KUBECONFIG)


def apply(tools: Tools, context: str, objs: list[dict]) -> None:
    run(tools.kubectl_cmd(context, "apply", "--server-side", "--force-conflicts",
                          "--field-manager=icn-lab", "-f", "-"),
        stdin=as_list(objs), timeout=120)


def seed_cluster(tools: Tools, context: str, regions: list[str], topology: str,
                 ready_delay_ms: int, metrics: list[dict]) -> None:
    # The Stage CRD is created by kwokctl; wait until the API serves it.
    deadline = time.time() + 60
    while run(tools.kubectl_cmd(context, "get", "stages.kwok.x-k8s.io"), check=False).returncode:
        if time.time() > deadline:
            raise LabError(f"{context}: the kwok Stage API never appeared")
        time.sleep(1)
    apply(tools, context, stages(ready_delay_ms, [], topology))
    apply(tools, context, nodes(regions, topology) + storage(regions, topology) + metrics)
    # kwok acts on node events: a node created before kwok saw the new stages is nudged again.
    deadline = time.time() + 120
    while True:
        out = run(tools.kubectl_cmd(context, "get", "nodes", "-o", "json")).stdout
        waiting = [n["metadata"]["name"] for n in json.loads(out)["items"]
                   if not any(c["type"] == "Ready" and c["status"] == "True"
                              for c in n.get("status", {}).get("conditions", []))]
        if not waiting:
            return
        if time.time() > deadline:
            raise LabError(f"{context}: nodes never got Ready: {', '.join(waiting)}")
        time.sleep(3)
        run(tools.kubectl_cmd(context, "annotate", "--overwrite", "node", *waiting,
                              f"lab.icn.network/nudged={int(time.time())}"), check=False)


# --------------------------------------------------------------------------- metrics API

METRICS_NAME = "lab-metrics"  # Service, Endpoints and ConfigMap in kube-system
METRICS_DEFAULTS = {  # every pod's values until a test sets others (see lab/metrics_api.py)
    "cpu": "10%", "memory": "10%", "network_bandwidth_utilization": "100M"}
METRICS_APISERVICES = [("metrics.k8s.io", "v1beta1"), ("custom.metrics.k8s.io", "v1beta2"),
                       ("custom.metrics.k8s.io", "v1beta1")]


def host_ip() -> str:
    """This machine's first non-loopback IPv4: Endpoints may not hold a loopback address."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            ip = sock.getsockname()[0]
        except OSError:
            ip = ""
    if not ip or ip.startswith("127."):
        out = run(["hostname", "-I"], check=False).stdout.split()
        ip = next((a for a in out if "." in a and not a.startswith("127.")), "")
    if not ip:
        raise LabError("no non-loopback IPv4 address here: the aggregator cannot reach the "
                       "lab's metrics API")
    return ip


def start_metrics_api(clusters: dict[str, str]) -> tuple[int, dict[str, int]]:
    """Starts lab/metrics_api.py for every cluster; returns its pid and {context: port}."""
    ports_file = LAB / "metrics-api.ports.json"
    ports_file.unlink(missing_ok=True)
    pki = cluster_dir(next(iter(clusters.values()))) / "pki"
    return start_helper([sys.executable, str(ROOT / "lab" / "metrics_api.py"), "--kubeconfig", str(KUBECONFIG),
                         "--cert", str(pki / "admin.crt"), "--key", str(pki / "admin.key"),
                         "--ports-file", str(ports_file), *clusters],
                        ports_file, LAB / "metrics-api.log", "the lab's metrics API")


def start_helper(cmd: list[str], ports_file: Path, logfile: Path, what: str) -> tuple[int, dict]:
    """Starts one of the lab's Python helpers (its own session, output in `logfile`) and waits until
    it has written `ports_file`, the ports it listens on; returns its pid and those ports."""
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
    deadline = time.time() + 20
    while not ports_file.exists():
        if proc.poll() is not None or time.time() > deadline:
            stop_pid(proc.pid)
            raise LabError(f"{what} did not start (see {logfile})")
        time.sleep(0.1)
    return proc.pid, json.loads(ports_file.read_text())


def metrics_objects(ip: str, port: int, custom: bool = True) -> list[dict]:
    """What registers the metrics API of one cluster: APIServices, a Service without selector
    and its Endpoints (this machine's address), and the ConfigMap of values. custom=False: the
    lab's metrics API serves metrics.k8s.io only (in a lab with Prometheus, prometheus-adapter
    serves custom.metrics.k8s.io)."""
    meta = {"name": METRICS_NAME, "namespace": "kube-system",
            "labels": {"app.kubernetes.io/part-of": "icn-lab"}}
    objs: list[dict] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": METRICS_DEFAULTS},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
         "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port}]}]},
    ]
    objs += apiservices([(g, v) for g, v in METRICS_APISERVICES if custom or g == "metrics.k8s.io"],
                        "kube-system", METRICS_NAME)
    return objs


def apiservices(group_versions: list[tuple[str, str]], namespace: str, service: str) -> list[dict]:
    objs = []
    for group, version in group_versions:
        objs.append({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": f"{version}.{group}",
                         "labels": {"app.kubernetes.io/part-of": "icn-lab"}},
            "spec": {"group": group, "version": version, "insecureSkipTLSVerify": True,
                     "groupPriorityMinimum": 100,
                     "versionPriority": 200 if version == "v1beta2" else 100,
                     "service": {"namespace": namespace, "name": service, "port": 443}},
        })
    return objs


# --------------------------------------------------------------------------- Prometheus

PROMETHEUS_DIR = LAB / "prometheus"
SCRAPE_SECONDS = 5  # scrape and rule evaluation interval of the lab's Prometheus


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install_monitoring_crds(tools: Tools, context: str, crds: Path) -> None:
    """ServiceMonitor, PodMonitor and PrometheusRule, as kube-prometheus-stack installs them."""
    files = sorted(crds.glob("*.yaml"))
    args = [a for f in files for a in ("-f", str(f))]
    run(tools.kubectl_cmd(context, "apply", "--server-side", "--force-conflicts", *args), timeout=120)
    wait_condition(tools, context, [f"crd/{f.stem}.monitoring.coreos.com" for f in files],
                   "Established", "prometheus-operator's CRDs", 60)


def wait_condition(tools: Tools, context: str, refs: list[str], condition: str, what: str,
                   timeout: float) -> None:
    """Polls until every object of `refs` has `condition` True. (`kubectl wait` fails on an object
    whose status is not written yet, as a CRD's or an APIService's just after its creation.)"""
    query = '{range .items[*]}{.status.conditions[?(@.type=="%s")].status}{"\\n"}{end}' % condition
    deadline = time.time() + timeout
    while True:
        out = run(tools.kubectl_cmd(context, "get", *refs, "-o", f"jsonpath={query}"), check=False)
        if out.returncode == 0 and out.stdout.split() == ["True"] * len(refs):
            return
        if time.time() > deadline:
            raise LabError(f"{context}: {what} not {condition} after {timeout:.0f} s: "
                           f"{(out.stdout + ' ' + out.stderr).strip()}")
        time.sleep(0.5)


def prometheus_config(exporters: dict[str, str], region_of: dict[str, list[str]],
                      tls: dict[str, dict] | None = None) -> dict:
    """One Prometheus for the whole lab, as a global Prometheus with a region label: the
    kube-state-metrics/kubelet series of every cluster, and the pods the ServiceMonitors select.
    tls ({context: tls_config}): the ServiceMonitors' targets are the clusters' API servers (the
    exporter's --through-api-server, for pods that really run: lab/kind/prometheus.py), one job per
    cluster with that cluster's CA and client certificate."""
    static = []
    for context, address in exporters.items():
        labels = {"cluster": context}
        if len(region_of[context]) == 1:
            labels["region"] = region_of[context][0]
        static.append({"targets": [address], "labels": labels})

    def file_sd(name: str) -> list[dict]:
        return [{"files": [str(PROMETHEUS_DIR / "targets" / f"{name}.json")],
                 "refresh_interval": f"{SCRAPE_SECONDS}s"}]
    if tls is None:
        monitors = [{"job_name": "service-monitors", "file_sd_configs": file_sd("*")}]
    else:
        monitors = [{"job_name": f"service-monitors-{context}", "scheme": "https",
                     "tls_config": tls[context], "file_sd_configs": file_sd(context)}
                    for context in exporters]
    return {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "scrape_timeout": f"{SCRAPE_SECONDS - 1}s",
                   "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "rule_files": [str(PROMETHEUS_DIR / "rules" / "*.yml")],
        "scrape_configs": [
            {"job_name": "kube-state-metrics", "honor_labels": True, "static_configs": static},
            *monitors,
        ],
    }


def wait_http(url: str, proc: subprocess.Popen, what: str, logfile: Path, timeout: float = 60) -> None:
    import urllib.request
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_pid(proc.pid)
            raise LabError(f"{what} did not start (see {logfile})")
        time.sleep(0.2)


def start_prometheus(state: dict, tools: Tools, region_of: dict[str, list[str]]) -> None:
    """prometheus-operator's CRDs in every cluster, the exporter (lab/exporter.py) and one Prometheus
    server, data under .lab/prometheus/data; their pids and the URL go into the lab's state."""
    dirs = tool_dirs(("prometheus", "promcrds"))
    bin_dir, crds = dirs["PROMETHEUS_BIN"], dirs["PROMETHEUS_CRDS"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda c: install_monitoring_crds(tools, c, crds), region_of))
    PROMETHEUS_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state["exporter_pid"], exporters = start_exporter(url, region_of)
    save_state(state)
    proc = spawn_prometheus(bin_dir, prometheus_config(exporters, region_of), port)
    state["prometheus_pid"], state["prometheus_url"] = proc.pid, url
    save_state(state)
    wait_http(f"{url}/-/ready", proc, "the lab's Prometheus", PROMETHEUS_DIR / "prometheus.log")
    log(f"Prometheus: {url} (scrapes every {SCRAPE_SECONDS}s; log {PROMETHEUS_DIR / 'prometheus.log'})")


def start_exporter(url: str, region_of: dict[str, list[str]], *extra: str) -> tuple[int, dict[str, str]]:
    """lab/exporter.py for the clusters of KUBECONFIG (a JSON kubeconfig), files in PROMETHEUS_DIR,
    telling the Prometheus at `url` to reload; returns its pid and {context: its address}."""
    ports_file = PROMETHEUS_DIR / "exporter.ports.json"
    ports_file.unlink(missing_ok=True)
    return start_helper(
        [sys.executable, str(ROOT / "lab" / "exporter.py"), "--kubeconfig", str(KUBECONFIG),
         "--dir", str(PROMETHEUS_DIR), "--ports-file", str(ports_file), "--prometheus-url", url,
         *extra, *(f"{c}={','.join(r)}" for c, r in region_of.items())],
        ports_file, PROMETHEUS_DIR / "exporter.log", "the lab's exporter")


def spawn_prometheus(bin_dir: Path, config: dict, port: int) -> subprocess.Popen:
    """Writes PROMETHEUS_DIR/prometheus.yml (0600: it may hold a client key) and starts the Prometheus
    server on it, in its own session, data in PROMETHEUS_DIR/data, log prometheus.log. The caller
    records its pid, then waits for it (wait_http on /-/ready)."""
    path = PROMETHEUS_DIR / "prometheus.yml"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(config, indent=2) + "\n")
    with open(PROMETHEUS_DIR / "prometheus.log", "ab") as out:
        return subprocess.Popen(
            [str(bin_dir / "prometheus"), f"--config.file={path}",
             f"--storage.tsdb.path={PROMETHEUS_DIR / 'data'}", "--storage.tsdb.retention.time=1d",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)


# Where the lab's prometheus-adapter is, as the monitoring role looks for it (its defaults).
ADAPTER_NAMESPACE, ADAPTER_NAME = "monitoring", "prometheus-adapter"
ADAPTER_IMAGE_TAG = "v0.12.0"  # shown on the kwok pod; the process runs from the built binary


# The adapter's config before the monitoring role adds its rule: one rule like the chart's defaults
# (container CPU seconds; the lab serves no such series). An adapter with no rule at all serves no
# custom.metrics.k8s.io, and the role would then choose a CPU-only HPA.
ADAPTER_CONFIG = """rules:
- seriesQuery: '{__name__=~"^container_.*",container!="POD",namespace!="",pod!=""}'
  resources:
    overrides:
      namespace: {resource: namespace}
      pod: {resource: pod}
  name:
    matches: ^container_(.*)_seconds_total$
    as: ""
  metricsQuery: sum(rate(<<.Series>>{<<.LabelMatchers>>,container!="POD"}[5m])) by (<<.GroupBy>>)
"""


def adapter_objects(ip: str, port: int) -> list[dict]:
    """prometheus-adapter as its Helm chart installs it (a Deployment and the ConfigMap of its
    config.yaml, with the chart's kind of default rule: the monitoring role adds the Super-Node's) and what registers it:
    a Service without selector, its Endpoints (this machine's address, where lab/adapter.py runs
    the adapter of this cluster) and the custom.metrics.k8s.io APIServices."""
    meta = {"name": ADAPTER_NAME, "namespace": ADAPTER_NAMESPACE,
            "labels": {"app.kubernetes.io/name": ADAPTER_NAME, "app.kubernetes.io/part-of": "icn-lab"}}
    selector = {"app.kubernetes.io/name": ADAPTER_NAME}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ADAPTER_NAMESPACE}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"config.yaml": ADAPTER_CONFIG}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {"replicas": 1, "selector": {"matchLabels": selector},
                  "template": {"metadata": {"labels": selector},
                               "spec": {"containers": [{
                                   "name": ADAPTER_NAME,
                                   "image": f"registry.k8s.io/prometheus-adapter/prometheus-adapter:{ADAPTER_IMAGE_TAG}",
                                   "args": ["--config=/etc/adapter/config.yaml"]}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta,
         "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port}]}]},
        *apiservices([(g, v) for g, v in METRICS_APISERVICES if g == "custom.metrics.k8s.io"],
                     ADAPTER_NAMESPACE, ADAPTER_NAME),
    ]


def start_adapter(state: dict, tools: Tools, clusters: dict[str, str], ip: str) -> None:
    """lab/adapter.py, which runs one prometheus-adapter per cluster against the lab's
    Prometheus, and the objects that make each cluster's aggregator serve it."""
    bin_dir = tool_dirs(("adapter",))["PROMETHEUS_ADAPTER_BIN"]
    directory = PROMETHEUS_DIR / "adapter"
    ports_file = directory / "ports.json"
    directory.mkdir(parents=True, exist_ok=True)
    ports_file.unlink(missing_ok=True)
    state["adapter_pid"], ports = start_helper(
        [sys.executable, str(ROOT / "lab" / "adapter.py"), "--kubeconfig", str(KUBECONFIG),
         "--bin", str(bin_dir / "prometheus-adapter"), "--dir", str(directory),
         "--prometheus-url", state["prometheus_url"], "--ports-file", str(ports_file),
         *(f"{c}={cluster_dir(n)}" for c, n in clusters.items())],
        ports_file, directory / "supervisor.log", "the lab's prometheus-adapter")
    save_state(state)
    names = [f"{v}.{g}" for g, v in METRICS_APISERVICES if g == "custom.metrics.k8s.io"]

    def one(context: str) -> None:
        apply(tools, context, adapter_objects(ip, ports[context]))
        wait_condition(tools, context, [f"apiservice/{n}" for n in names], "Available",
                       "prometheus-adapter's custom.metrics.k8s.io", 90)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, clusters))
    log(f"prometheus-adapter: custom.metrics.k8s.io in every cluster (log {directory}/<context>/adapter.log)")


def write_staking_keys(regions: list[str]) -> None:
    """Lab-only staking keys (random, 32 bytes each, hex) for inventories/local."""
    import secrets
    path = LAB / "staking-keys.json"
    path.write_text(json.dumps({r: secrets.token_hex(32) for r in regions}, indent=2))
    os.chmod(path, 0o600)


def cmd_up(args: argparse.Namespace) -> None:
    if STATE.exists():
        state = load_state()
        want = (args.topology, args.regions if args.topology == "multi" else len(REGIONS))
        have = (state["topology"], len(state["regions"]))
        if want == have and all(_answers(Tools(), c) for c in state["clusters"]):
            if args.prometheus and not state.get("prometheus_url"):
                raise LabError("the lab is up without Prometheus: `make lab-down`, then start it "
                               "with --prometheus (make lab-up does)")
            log("the lab is already up")
            return
        raise LabError(f"a lab is already here ({state['topology']}, {len(state['regions'])} "
                       "regions): run `make lab-down` first")
    catalogue = pick_catalogue(args.catalogue, args.regions)
    names = catalogue_regions(catalogue)
    if not 1 <= args.regions <= len(names):
        raise LabError(f"REGIONS must be 1 to {len(names)} (the regions of {catalogue}), not {args.regions}")
    started = time.time()
    tools = Tools()
    tools_ready = time.time()
    KWOK_WORKDIR.mkdir(parents=True, exist_ok=True)
    regions = names[: args.regions] if args.topology == "multi" else list(REGIONS)
    if args.topology == "multi":
        clusters = {f"icn-{r}": f"icn-{r}" for r in regions}
        region_of = {f"icn-{r}": [r] for r in regions}
    else:
        clusters = {"icn-single": "icn-single"}
        region_of = {"icn-single": regions}
    state = {"topology": args.topology, "regions": regions, "clusters": clusters,
             "catalogue": str(catalogue),
             "ready_delay_ms": args.ready_delay_ms, "faults": {c: [] for c in clusters}}
    save_state(state)  # written first, so `down` can clean up a half-started lab
    write_staking_keys(regions)
    # One at a time: kwokctl picks free ports by counting down from a fixed number, so two
    # kwokctl processes started together choose the same ports.
    for name in clusters.values():
        create_cluster(tools, name)
    merge_kubeconfig(tools, clusters)
    ip = host_ip()
    state["metrics_api_pid"], ports = start_metrics_api(clusters)
    save_state(state)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
        list(pool.map(lambda c: seed_cluster(tools, c, region_of[c], args.topology,
                                             args.ready_delay_ms,
                                             metrics_objects(ip, ports[c], custom=not args.prometheus)),
                      clusters))
    state["pids"] = {c: cluster_pids(n) for c, n in clusters.items()}
    save_state(state)
    if args.prometheus:
        start_prometheus(state, tools, region_of)
        start_adapter(state, tools, clusters, ip)
    if args.topology == "multi":
        write_inventory(regions, catalogue)
    state["started_seconds"] = round(time.time() - tools_ready, 1)
    save_state(state)
    log(f"lab up: {len(clusters)} cluster(s) in {time.time() - tools_ready:.0f}s "
        f"(tools {tools_ready - started:.0f}s); KUBECONFIG={KUBECONFIG}"
        + (f"; inventory of its regions: -i {LAB / 'inventory'}" if args.topology == "multi" else ""))


def write_inventory(regions: list[str], catalogue: Path) -> None:
    """An inventory of exactly the lab's regions, in LAB/inventory: inventories/local's group
    variables (a link) and one host per region, with the catalogue they come from when it is not
    the chart's. `-i .lab/inventory` then reaches every region of a lab of any size."""
    inventory = LAB / "inventory"
    inventory.mkdir(exist_ok=True)
    link = inventory / "group_vars"
    if not link.is_symlink():
        link.symlink_to(ROOT / "inventories" / "local" / "group_vars")
    lines = ["---", "# Written by lab/icnlab.py up: the lab's regions (removed by `make lab-down`).",
             "super_nodes:", "  hosts:"]
    lines += [f"    {r}:\n      super_node_kube_context: icn-{r}" for r in regions]
    if catalogue != CHART_CATALOGUE:
        lines += ["  vars:", f"    super_node_catalogue: {catalogue}"]
    (inventory / "hosts.yml").write_text("\n".join(lines) + "\n")


def _answers(tools: Tools, context: str) -> bool:
    try:
        return run(tools.kubectl_cmd(context, "get", "--raw", "/readyz"), timeout=25,
                   check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def cmd_status(_args: argparse.Namespace) -> None:
    state = load_state()
    tools = Tools()
    servers = {}
    if KUBECONFIG.exists():
        cfg = json.loads(KUBECONFIG.read_text())
        servers = {c["name"]: c["cluster"]["server"] for c in cfg["clusters"]}
    print(f"topology: {state['topology']}   kubeconfig: {KUBECONFIG}")
    print(f"{'CONTEXT':<16} {'API ENDPOINT':<28} {'NODES':>5}  {'ANSWERS':<7}  FAULTS")
    for context in state["clusters"]:
        ok = _answers(tools, context)
        count = "-"
        if ok:
            out = run(tools.kubectl_cmd(context, "get", "nodes", "-o", "name"), check=False)
            count = str(len(out.stdout.split())) if out.returncode == 0 else "?"
        faults = ",".join(f"{f['region']}:{f['tag']}" for f in state["faults"].get(context, []))
        print(f"{context:<16} {servers.get(context, '?'):<28} {count:>5}  "
              f"{'yes' if ok else 'NO':<7}  {faults or '-'}")
    if state.get("prometheus_url"):
        up = alive(state.get("prometheus_pid") or 0) and alive(state.get("exporter_pid") or 0)
        print(f"Prometheus: {state['prometheus_url']}  ({'running' if up else 'NOT RUNNING'}; "
              f"rules and targets from the clusters' PrometheusRules and ServiceMonitors)")
        adapter = "running" if alive(state.get("adapter_pid") or 0) else "NOT RUNNING"
        print(f"prometheus-adapter: {adapter} (custom.metrics.k8s.io: the HPA's bandwidth, PromQL "
              f"over the pods' byte counters; metrics.k8s.io: the lab's metrics API)")
    else:
        print("Prometheus: none (started without --prometheus; the HPA reads the lab's metrics API)")


def cmd_fault(args: argparse.Namespace) -> None:
    state = load_state()
    if args.region not in state["regions"]:
        raise LabError(f"region {args.region!r} is not in this lab (allowed: "
                       f"{', '.join(state['regions'])})")
    context = "icn-single" if state["topology"] == "single" else f"icn-{args.region}"
    faults = [f for f in state["faults"][context] if f["region"] != args.region]
    if not args.clear:
        if not args.tag:
            raise LabError("fault needs --tag TAG or --clear")
        faults.append({"region": args.region, "tag": args.tag})
    state["faults"][context] = faults
    apply(Tools(), context, stages(state["ready_delay_ms"], faults, state["topology"]))
    save_state(state)
    log(f"{args.region}: " + (f"pods of tag {args.tag} never get Ready" if not args.clear
                              else "faults cleared"))


def cmd_down(_args: argparse.Namespace) -> None:
    if not LAB.exists():
        log("no lab here")
        return
    state = json.loads(STATE.read_text()) if STATE.exists() else {"clusters": {}}
    names = list(state.get("clusters", {}).values())
    # Clusters kwokctl knows of under our workdir, in case the state was written before a crash.
    if (KWOK_WORKDIR / "clusters").exists():
        names += [p.name for p in (KWOK_WORKDIR / "clusters").iterdir() if p.name not in names]
    kwokctl = None
    try:
        kwokctl = Tools().kwokctl
    except (subprocess.CalledProcessError, KeyError):
        pass
    for name in names:
        pids = cluster_pids(name)
        if kwokctl:
            env = dict(os.environ, KWOK_WORKDIR=str(KWOK_WORKDIR))
            run([str(kwokctl), "delete", "cluster", "--name", name,
                 "--kubeconfig", str(KWOK_WORKDIR / f"{name}.kubeconfig")],
                env=env, timeout=120, check=False)
        # kwokctl stops its processes by pid; make sure, by the pids we recorded, never by name.
        recorded = state.get("pids", {})
        for pid in set(pids.values()) | {p for c in recorded.values() for p in c.values()}:
            stop_pid(pid)
    for key in ("adapter_pid", "prometheus_pid", "exporter_pid", "metrics_api_pid"):
        if state.get(key):
            stop_pid(state[key])
    import shutil
    shutil.rmtree(LAB, ignore_errors=True)
    log("lab down")


def stop_pid(pid: int) -> None:
    """SIGTERM, then SIGKILL after 5 s; each time waiting, up to 5 s, until every thread is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if alive(pid):
        log(f"pid {pid} still running 5 s after SIGKILL")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the lab")
    up.add_argument("--regions", type=int, default=len(REGIONS),
                    help="the first N regions of the catalogue (the chart's: " + ", ".join(REGIONS)
                    + f"; more than {len(REGIONS)}: lab/fleet.yaml's)")
    up.add_argument("--catalogue", help="a region catalogue file (default: the chart's regions.yaml, "
                    "or lab/fleet.yaml for more regions than it has)")
    up.add_argument("--topology", choices=["multi", "single"], default="multi")
    up.add_argument("--ready-delay-ms", type=int, default=2000,
                    help="how long a pod takes to turn Ready (default 2000)")
    up.add_argument("--parallel", type=int, default=4, help="clusters seeded at once")
    up.add_argument("--prometheus", action="store_true",
                    help="also prometheus-operator's CRDs, the lab's exporter and a Prometheus server "
                    "(built from its Go module; make lab-up starts them, make demo does not)")
    up.set_defaults(func=cmd_up)
    sub.add_parser("status", help="print each cluster's state").set_defaults(func=cmd_status)
    fault = sub.add_parser("fault", help="make a tag fail readiness in a region")
    fault.add_argument("region")
    fault.add_argument("--tag")
    fault.add_argument("--clear", action="store_true")
    fault.set_defaults(func=cmd_fault)
    sub.add_parser("down", help="stop the lab and remove its state").set_defaults(func=cmd_down)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except LabError as err:
        log(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
