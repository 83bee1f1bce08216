"""Rendering tests of charts/super-node (chart icn-super-node).

Every test asserts on what `helm template` produces (or on how it fails), through
tests/chartkit.py: helm is taken from $HELM, else PATH, else the tools cache, and each distinct
set of arguments is rendered once per test run, so the module stays fast.

Run from the repo root:
    HELM=/path/to/helm .venv/bin/python -m pytest tests/chart -q
"""

from __future__ import annotations

import json
import re
from collections import Counter

import jsonschema
import pytest
import yaml

from chartkit import CHART, KUBE_VERSION, NAMESPACE, REGIONS, RELEASE, ROOT, of_kind, render, render_error, run_helm

PROD_VALUES = CHART / "values-prod.yaml"
# docs/CONVENTIONS.md: regions, in order.
PER_REGION_KINDS = ["StatefulSet", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                    "ServiceAccount", "NetworkPolicy"]
ISTIO = ("--api-versions", "networking.istio.io/v1/VirtualService")
PROMETHEUS = ("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")


# --------------------------------------------------------------------------- helpers

def by_name(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in of_kind(docs, kind)}


def region_of(obj: dict) -> str:
    return obj["metadata"]["labels"]["icn.network/region"]


def container(sts: dict) -> dict:
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return c


def names_field(stderr: str, field: str) -> bool:
    """True if stderr names the value: dotted (chart's own checks) or JSON pointer (schema)."""
    pointer = "/" + field.replace(".", "/")
    return field in stderr or pointer in stderr


def neighbours() -> dict[str, list[str]]:
    return {e["name"]: e["neighbours"] for e in yaml.safe_load((CHART / "regions.yaml").read_text())["regions"]}


# --------------------------------------------------------------------------- names and counts

@pytest.mark.parametrize("args", [(), ("--set", "global.regions=all")], ids=["default", "all"])
def test_every_region_gets_its_objects(args):
    docs = render(*args)
    expected = {f"icn-super-node-{r}" for r in REGIONS}
    for kind in PER_REGION_KINDS:
        assert set(by_name(docs, kind)) == expected, kind
        assert len(of_kind(docs, kind)) == 7, kind
    assert set(by_name(docs, "ConfigMap")) == {f"icn-super-node-{r}-bootstrap" for r in REGIONS}
    services = set(by_name(docs, "Service"))
    assert services == expected | {f"{n}-headless" for n in expected} | {"super-node"}
    for kind in PER_REGION_KINDS:
        for obj in of_kind(docs, kind):
            assert obj["metadata"]["name"] == f"icn-super-node-{region_of(obj)}"
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_all_is_the_default_region_list():
    assert render("--set", "global.regions=all") == render()
    sts = [s["metadata"]["name"] for s in of_kind(render("--set", "global.regions=all"), "StatefulSet")]
    assert sts == [f"icn-super-node-{r}" for r in REGIONS]  # conventions order


def test_single_region():
    docs = render("--set", "global.regions={eu-west}")
    assert [s["metadata"]["name"] for s in of_kind(docs, "StatefulSet")] == ["icn-super-node-eu-west"]
    for kind in PER_REGION_KINDS:
        assert list(by_name(docs, kind)) == ["icn-super-node-eu-west"], kind
    assert set(by_name(docs, "Service")) == {
        "icn-super-node-eu-west", "icn-super-node-eu-west-headless", "super-node"}


def test_object_names_do_not_depend_on_release_name():
    a = render("--set", "istio.enabled=true", "--set", "metrics.serviceMonitor.enabled=true")
    b = render("--set", "istio.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
               release="icn-super-node-apac")
    assert [(d["kind"], d["metadata"]["name"]) for d in a] == [(d["kind"], d["metadata"]["name"]) for d in b]
    assert {d["metadata"]["labels"]["app.kubernetes.io/instance"] for d in b} == {"icn-super-node-apac"}


def test_per_region_releases_share_a_namespace_without_owning_the_same_object():
    """Seven releases (Ansible: one per region, mesh routing in one) == one release of all seven."""
    common = ("--set", "istio.enabled=true", "--set", "metrics.serviceMonitor.enabled=true")
    owned = []
    for i, r in enumerate(REGIONS):
        mesh = ("--set", "istio.meshRouting.regions=all") if i == 0 else \
               ("--set", "istio.meshRouting.enabled=false")
        docs = render("--set", f"global.regions={{{r}}}", *mesh, *common, release=f"icn-super-node-{r}")
        owned += [(d["kind"], d["metadata"]["name"]) for d in docs]
    dupes = [k for k, n in Counter(owned).items() if n > 1]
    assert not dupes, f"objects owned by two releases: {dupes}"
    single = render(*common)
    assert sorted(owned) == sorted((d["kind"], d["metadata"]["name"]) for d in single)


# --------------------------------------------------------------------------- StatefulSet

def test_stable_identity_through_headless_service():
    docs = render()
    services = by_name(docs, "Service")
    for sts in of_kind(docs, "StatefulSet"):
        r = region_of(sts)
        headless = services[sts["spec"]["serviceName"]]
        assert sts["spec"]["serviceName"] == f"icn-super-node-{r}-headless"
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["publishNotReadyAddresses"] is True
        assert headless["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
        client = services[f"icn-super-node-{r}"]
        assert client["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
        assert client["spec"].get("clusterIP") != "None"
        assert sts["spec"]["updateStrategy"]["type"] == "RollingUpdate"


def test_affinity_keeps_a_regions_pods_apart_and_near_their_region():
    for sts in of_kind(render(), "StatefulSet"):
        r = region_of(sts)
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        aff = sts["spec"]["template"]["spec"]["affinity"]
        (anti,) = aff["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert anti["topologyKey"] == "kubernetes.io/hostname"
        sel = anti["labelSelector"]["matchLabels"]
        assert sel == {"app.kubernetes.io/name": "icn-super-node", "icn.network/region": r}
        assert all(pod_labels[k] == v for k, v in sel.items())
        (pref,) = aff["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in aff["nodeAffinity"]
        assert pref["preference"]["matchExpressions"] == [
            {"key": "topology.kubernetes.io/region", "operator": "In", "values": [r]}]
        (spread,) = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone"
        assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
        assert spread["labelSelector"]["matchLabels"] == sel


def test_selectors_and_pod_labels():
    for sts in of_kind(render(), "StatefulSet"):
        r = region_of(sts)
        assert sts["spec"]["selector"]["matchLabels"] == {
            "app.kubernetes.io/name": "icn-super-node", "icn.network/region": r}
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["icn.network/region"] == r
        assert "helm.sh/chart" not in labels and "app.kubernetes.io/version" not in labels
        assert "helm.sh/chart" in sts["metadata"]["labels"]  # ...but the object itself carries it
        for vct in sts["spec"]["volumeClaimTemplates"]:
            assert "app.kubernetes.io/instance" not in vct["metadata"].get("labels", {})


def test_bootstrap_checksum_rolls_pods_only_when_the_bootstrap_list_changes():
    def checksums(*args):
        return {region_of(s): s["spec"]["template"]["metadata"]["annotations"]["checksum/bootstrap"]
                for s in of_kind(render(*args), "StatefulSet")}
    base = checksums()
    other = "/ip4/10.0.0.1/tcp/9000/p2p/12D3KooWSmcJzTUMH1JT5iTCSEhtvSM4bg3hiCB9jDdVmStx8XUu"
    changed = checksums("--set", f"p2p.bootstrapNodes={{{other}}}")
    assert all(re.fullmatch(r"[0-9a-f]{64}", c) for c in base.values())
    assert all(base[r] != changed[r] for r in REGIONS)
    assert checksums("--set", "image.tag=v1.1.0") == base


def test_bootstrap_configmap_holds_every_bootstrap_node():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    nodes = values["p2p"]["bootstrapNodes"]
    for cm in of_kind(render(), "ConfigMap"):
        assert cm["data"]["BOOTSTRAP_NODES"] == ",".join(nodes)
        assert cm["data"]["bootstrap-nodes.txt"].split() == nodes


def test_container_ports_probes_env_and_mounts():
    docs = render()
    configmaps = by_name(docs, "ConfigMap")
    for sts in of_kind(docs, "StatefulSet"):
        r = region_of(sts)
        c = container(sts)
        assert c["image"] == "ghcr.io/icn/super-node:v1.0.0"
        assert c["imagePullPolicy"] == "IfNotPresent"
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"p2p": 9000, "metrics": 9100}
        assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
        env = {e["name"]: e for e in c["env"]}
        assert env["REGION"]["value"] == r
        assert env["P2P_PORT"]["value"] == "9000"
        cm_ref = env["BOOTSTRAP_NODES"]["valueFrom"]["configMapKeyRef"]
        assert cm_ref["key"] in configmaps[cm_ref["name"]]["data"]
        assert cm_ref["name"] == f"icn-super-node-{r}-bootstrap"
        assert env["STAKING_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "icn-staking-keys", "key": f"{r}-staking-key"}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts == {"/data": "data", "/tmp": "tmp"}
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes["tmp"]


def test_existing_secret_name_comes_from_values():
    for sts in of_kind(render("--set", "secrets.stakingKeys.existingSecret=vault-staking"), "StatefulSet"):
        ref = container(sts)["env"][-1]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "vault-staking", "key": f"{region_of(sts)}-staking-key"}
    assert not of_kind(render(), "Secret")


@pytest.mark.parametrize("args", [(), ("-f", str(PROD_VALUES)), ("--set", "persistence.size=20Ti")],
                         ids=["default", "prod", "20Ti"])
def test_volume_size_is_on_the_claim_not_on_container_resources(args):
    size = "20Ti" if "persistence.size=20Ti" in args else "10Ti"
    for sts in of_kind(render(*args), "StatefulSet"):
        for c in sts["spec"]["template"]["spec"]["containers"]:
            for part in ("requests", "limits"):
                assert "storage" not in c["resources"].get(part, {}), c["resources"]
                assert set(c["resources"][part]) <= {"cpu", "memory", "ephemeral-storage"}
        (vct,) = sts["spec"]["volumeClaimTemplates"]
        assert vct["metadata"]["name"] == "data"
        assert vct["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert vct["spec"]["storageClassName"] == "fast-ssd"
        assert vct["spec"]["resources"]["requests"]["storage"] == size


def test_replicas_left_to_the_hpa_when_autoscaling():
    docs = render()
    assert of_kind(docs, "StatefulSet")
    for sts in of_kind(docs, "StatefulSet"):
        assert "replicas" not in sts["spec"]
    assert len(of_kind(docs, "HorizontalPodAutoscaler")) == 7


@pytest.mark.parametrize("replicas", [2, 3])
def test_replicas_set_when_autoscaling_is_off(replicas):
    docs = render("--set", "autoscaling.enabled=false", "--set", f"replicasPerRegion={replicas}")
    assert [s["spec"]["replicas"] for s in of_kind(docs, "StatefulSet")] == [replicas] * 7
    assert not of_kind(docs, "HorizontalPodAutoscaler")


def test_claims_are_retained():
    for sts in of_kind(render(), "StatefulSet"):
        assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": "Retain", "whenScaled": "Retain"}


def test_restricted_security_context():
    docs = render()
    for sts in of_kind(docs, "StatefulSet"):
        pod = sts["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == sts["metadata"]["name"]
        sc = container(sts)["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for sa in of_kind(docs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- HPA, PDB, NetworkPolicy

def test_hpa_scales_on_cpu_and_bandwidth_without_thrashing():
    for hpa in of_kind(render(), "HorizontalPodAutoscaler"):
        spec = hpa["spec"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                          "name": hpa["metadata"]["name"]}
        assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 8)
        metrics = {m["type"]: m for m in spec["metrics"]}
        assert metrics["Resource"]["resource"]["name"] == "cpu"
        assert metrics["Pods"]["pods"]["metric"]["name"] == "network_bandwidth_utilization"
        assert metrics["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "800M"}
        down = spec["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 300
        assert spec["behavior"]["scaleUp"]["policies"]


def test_pdb_keeps_one_pod_per_region():
    docs = render()
    selectors = {s["metadata"]["name"]: s["spec"]["selector"]["matchLabels"] for s in of_kind(docs, "StatefulSet")}
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        assert pdb["spec"]["minAvailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == selectors[pdb["metadata"]["name"]]


def test_network_policy_admits_p2p_and_metrics_scrapes_only():
    for np_ in of_kind(render(), "NetworkPolicy"):
        spec = np_["spec"]
        assert spec["podSelector"]["matchLabels"]["icn.network/region"] == region_of(np_)
        assert spec["policyTypes"] == ["Ingress"]
        p2p, metrics = spec["ingress"]
        assert "from" not in p2p and p2p["ports"] == [{"port": 9000, "protocol": "TCP"}]
        assert metrics["ports"] == [{"port": 9100, "protocol": "TCP"}]
        assert metrics["from"] == [{"namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


# --------------------------------------------------------------------------- ServiceMonitor

@pytest.mark.parametrize("args,expected", [
    ((), 0),
    (PROMETHEUS, 7),
    (("--set", "metrics.serviceMonitor.enabled=true"), 7),
    (PROMETHEUS + ("--set", "metrics.serviceMonitor.enabled=false"), 0),
], ids=["default", "api-available", "forced-on", "forced-off"])
def test_service_monitor_follows_the_api(args, expected):
    docs = render(*args)
    monitors = of_kind(docs, "ServiceMonitor")
    assert len(monitors) == expected
    services = of_kind(docs, "Service")
    for sm in monitors:
        (ep,) = sm["spec"]["endpoints"]
        assert ep["port"] == "metrics" and ep["interval"] == "15s"
        want = sm["spec"]["selector"]["matchLabels"]
        matched = [s for s in services if want.items() <= s["metadata"]["labels"].items()]
        assert [s["metadata"]["name"] for s in matched] == [f"{sm['metadata']['name']}-headless"]
        assert "metrics" in {p["name"] for p in matched[0]["spec"]["ports"]}


# --------------------------------------------------------------------------- Istio

def test_istio_objects_only_with_istio():
    assert not [d for d in render() if d["apiVersion"].startswith("networking.istio.io")]
    docs = render(*ISTIO)
    assert len(of_kind(docs, "VirtualService")) == 1
    assert set(by_name(docs, "DestinationRule")) == {f"icn-super-node-{r}" for r in REGIONS} | {"super-node"}
    assert not of_kind(render(*ISTIO, "--set", "istio.enabled=false"), "VirtualService")


@pytest.mark.parametrize("regions", [
    REGIONS, ["eu-west"], ["na-west", "eu-west", "apac"], REGIONS[:6], ["latam", "mena"],
], ids=lambda r: f"{len(r)}-regions")
def test_virtual_service_weights_sum_to_100(regions):
    docs = render("--set", "global.regions={" + ",".join(regions) + "}", *ISTIO)
    (vs,) = of_kind(docs, "VirtualService")
    assert vs["apiVersion"] == "networking.istio.io/v1"
    assert vs["spec"]["hosts"] == [f"super-node.{NAMESPACE}.svc.cluster.local"]
    clients = {f"{n}.{NAMESPACE}.svc.cluster.local" for n in by_name(docs, "Service")}
    http = vs["spec"]["http"]
    for route in http:
        assert sum(d.get("weight", 100) for d in route["route"]) == 100, route
        for dest in route["route"]:
            assert dest["destination"]["host"] in clients
    *by_region, default = http
    assert "match" not in default
    assert [(d["destination"]["host"], d["weight"]) for d in default["route"]] == \
        [(f"super-node.{NAMESPACE}.svc.cluster.local", 100)]
    assert [m["match"][0]["headers"]["x-client-region"]["exact"] for m in by_region] == regions
    for r, rule in zip(regions, by_region):
        nearest = next((n for n in neighbours()[r] if n in regions), None)
        want = [(f"icn-super-node-{r}", 90), (f"icn-super-node-{nearest}", 10)] if nearest \
            else [(f"icn-super-node-{r}", 100)]
        got = [(d["destination"]["host"].split(".")[0], d["weight"]) for d in rule["route"]]
        assert got == want


def test_mesh_routing_owned_by_one_release():
    off = render(*ISTIO, "--set", "istio.meshRouting.enabled=false")
    assert not of_kind(off, "VirtualService") and "super-node" not in by_name(off, "Service")
    assert len(of_kind(off, "DestinationRule")) == 7
    owner = render(*ISTIO, "--set", "global.regions={na-west}", "--set", "istio.meshRouting.regions=all")
    (vs,) = of_kind(owner, "VirtualService")
    assert len(vs["spec"]["http"]) == 8 and len(vs["spec"]["http"][-1]["route"]) == 1
    assert len(of_kind(owner, "StatefulSet")) == 1
    mesh = by_name(owner, "Service")["super-node"]
    assert mesh["spec"]["selector"] == {"app.kubernetes.io/name": "icn-super-node"}


def test_destination_rules_fail_over_to_the_nearest_neighbour():
    for dr in of_kind(render(*ISTIO), "DestinationRule"):
        if dr["metadata"]["name"] == "super-node":
            continue  # the mesh-wide host: test_mesh_destination_rule_is_locality_aware
        r = region_of(dr)
        assert dr["spec"]["host"] == f"icn-super-node-{r}.{NAMESPACE}.svc.cluster.local"
        tp = dr["spec"]["trafficPolicy"]
        assert set(tp["connectionPool"]) == {"tcp", "http"}
        assert {"consecutive5xxErrors", "interval", "baseEjectionTime"} <= set(tp["outlierDetection"])
        assert tp["loadBalancer"]["localityLbSetting"]["failover"] == [{"from": r, "to": neighbours()[r][0]}]


@pytest.mark.parametrize("regions", [REGIONS, ["eu-west", "apac"], ["latam"]], ids=lambda r: f"{len(r)}-regions")
def test_mesh_destination_rule_is_locality_aware(regions):
    docs = render(*ISTIO, "--set", "global.regions={" + ",".join(regions) + "}")
    dr = by_name(docs, "DestinationRule")["super-node"]
    assert dr["spec"]["host"] == f"super-node.{NAMESPACE}.svc.cluster.local"
    tp = dr["spec"]["trafficPolicy"]
    assert set(tp["connectionPool"]) == {"tcp", "http"}
    assert tp["outlierDetection"]["consecutive5xxErrors"] > 0
    lb = tp["loadBalancer"]["localityLbSetting"]
    want = [{"from": r, "to": next(n for n in neighbours()[r] if n in regions)}
            for r in regions if len(regions) > 1]
    assert lb["enabled"] is True and lb.get("failover", []) == want


def test_remote_regions_get_a_client_service_without_local_pods():
    docs = render(*ISTIO, "--set", "global.regions={eu-west}", "--set", "istio.meshRouting.regions=all",
                  "--set", "istio.meshRouting.remoteRegions={eu-west,eu-east,apac}")
    services = by_name(docs, "Service")
    for r in ("eu-east", "apac"):
        svc = services[f"icn-super-node-{r}"]
        assert svc["metadata"]["labels"]["icn.network/service"] == "remote-client"
        assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "icn-super-node", "icn.network/region": r}
    # the local region keeps its own client Service (not a second one), and no workload for the others
    assert services["icn-super-node-eu-west"]["metadata"]["labels"]["icn.network/service"] == "client"
    assert [s["metadata"]["name"] for s in of_kind(docs, "StatefulSet")] == ["icn-super-node-eu-west"]
    assert "icn-super-node-na-west" not in services


def test_neighbour_table_is_complete():
    table = neighbours()
    assert list(table) == REGIONS
    for r, near in table.items():
        assert sorted(near) == sorted(set(REGIONS) - {r}), r
    assert table["na-west"][:4] == ["na-east", "latam", "apac", "eu-west"]
    assert table["eu-west"][:3] == ["eu-east", "na-east", "mena"]


# --------------------------------------------------------------------------- bad values

BAD_VALUES = [
    ("unknown-region", ["--set", "global.regions={eu-west,mars}"], ["global.regions"]),
    ("unknown-region-string", ["--set", "global.regions=mars"], ["global.regions"]),
    ("duplicate-region", ["--set", "global.regions={eu-west,apac,eu-west}"], ["global.regions"]),
    ("empty-regions", ["--set", "global.regions={}"], ["global.regions"]),
    ("storage-size", ["--set", "persistence.size=10TB"], ["persistence.size"]),
    ("storage-size-number-first", ["--set", "persistence.size=Ti10"], ["persistence.size"]),
    ("multiaddr-no-peer-id", ["--set", "p2p.bootstrapNodes={/dns4/boot1.icn.network/tcp/9000}"],
     ["p2p.bootstrapNodes"]),
    ("multiaddr-no-transport", ["--set", "p2p.bootstrapNodes={/dns4/boot1.icn.network/p2p/"
                                "12D3KooWSmcJzTUMH1JT5iTCSEhtvSM4bg3hiCB9jDdVmStx8XUu}"], ["p2p.bootstrapNodes"]),
    ("multiaddr-hostname", ["--set", "p2p.bootstrapNodes={boot1.icn.network:9000}"], ["p2p.bootstrapNodes"]),
    ("missing-secret", ["--set", "secrets.stakingKeys.existingSecret="], ["secrets.stakingKeys.existingSecret"]),
    ("latest-in-prod", ["-f", str(PROD_VALUES), "--set", "image.tag=latest"], ["image.tag"]),
    ("one-replica-with-pdb", ["--set", "replicasPerRegion=1"], ["replicasPerRegion"]),
    ("hpa-min-above-max", ["--set", "autoscaling.minReplicas=9"], ["autoscaling.minReplicas"]),
    ("pdb-blocks-drains", ["--set", "autoscaling.enabled=false", "--set", "podDisruptionBudget.minAvailable=2"],
     ["podDisruptionBudget.minAvailable", "replicasPerRegion"]),
    ("storage-in-resources", ["--set", "resources.requests.storage=10Ti"], ["resources.requests", "storage"]),
    ("neighbour-is-self", ["--set", "routing.neighbours.apac={apac,mena}"], ["routing.neighbours.apac"]),
    ("neighbour-of-no-region", ["--set", "routing.neighbours.mars={apac}"], ["routing.neighbours.mars", "apac, latam"]),
    ("catalogue-region-twice", ["--set", "regions[0].name=x1", "--set", "regions[0].neighbours={x1}",
                                "--set", "regions[1].name=x1", "--set", "regions[1].neighbours={x1}"],
     ["regions[1].name: x1 is listed twice", "neighbours of x1"]),
    ("unknown-key", ["--set", "replicas=3"], ["'replicas'"]),
    ("service-monitor-mode", ["--set", "metrics.serviceMonitor.enabled=maybe"], ["metrics.serviceMonitor.enabled"]),
]


@pytest.mark.parametrize("args,fields", [(a, f) for _, a, f in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES])
def test_bad_values_fail_and_name_the_field(args, fields):
    stderr = render_error(*args)
    for field in fields:
        assert names_field(stderr, field), f"{field} not named in:\n{stderr}"


def test_chart_checks_fail_once_with_every_message():
    stderr = render_error("--set", "global.regions={eu-west,eu-west}", "--set", "autoscaling.minReplicas=9",
                          "--set", "podDisruptionBudget.minAvailable=2", "--set", "autoscaling.enabled=false")
    assert stderr.count("invalid values") == 1
    assert "(3 problem(s))" in stderr
    for field in ("global.regions", "autoscaling.minReplicas", "podDisruptionBudget.minAvailable"):
        assert field in stderr
    assert "allowed:" in stderr


def test_latest_is_only_rejected_in_prod():
    (sts, *_) = of_kind(render("--set", "image.tag=latest"), "StatefulSet")
    assert container(sts)["image"].endswith(":latest")
    (sts, *_) = of_kind(render("-f", str(PROD_VALUES)), "StatefulSet")
    assert container(sts)["image"] == "ghcr.io/icn/super-node:v1.0.0"


def test_one_replica_is_fine_without_a_pdb():
    docs = render("--set", "replicasPerRegion=1", "--set", "podDisruptionBudget.enabled=false",
                  "--set", "autoscaling.enabled=false")
    assert [s["spec"]["replicas"] for s in of_kind(docs, "StatefulSet")] == [1] * 7
    assert not of_kind(docs, "PodDisruptionBudget")


# --------------------------------------------------------------------------- lint, schema, docs

@pytest.mark.parametrize("args", [(), ("-f", str(PROD_VALUES))], ids=["default", "prod"])
def test_helm_lint_strict(args):
    proc = run_helm("lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_is_draft7_and_accepts_the_shipped_values():
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema, cls=jsonschema.Draft7Validator)
    # The default renders every region of the catalogue; a catalogue file is also a values file.
    assert values["global"]["regions"] == "all" and values["regions"] == []
    for catalogue in (CHART / "regions.yaml", ROOT / "lab/fleet.yaml"):
        given = dict(values, **yaml.safe_load(catalogue.read_text()))
        jsonschema.validate(given, schema, cls=jsonschema.Draft7Validator)


def test_a_fleet_of_other_regions_is_one_catalogue_file():
    """lab/fleet.yaml as the values' catalogue: its new regions render and route to their
    catalogue neighbours; a region of no catalogue is refused, naming the catalogue's."""
    fleet = {e["name"]: e["neighbours"] for e in yaml.safe_load((ROOT / "lab/fleet.yaml").read_text())["regions"]}
    regions = ["af-south", "af-west", "eu-north"]
    docs = render("-f", str(ROOT / "lab/fleet.yaml"), "--set", "global.regions={" + ",".join(regions) + "}",
                  "--set", "istio.enabled=true", "--set", "istio.meshRouting.enabled=true")
    assert sorted(d["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet") == sorted(
        f"icn-super-node-{r}" for r in regions)
    for dr in (d for d in docs if d["kind"] == "DestinationRule"):
        region = dr["metadata"]["name"].removeprefix("icn-super-node-")
        if region in regions:
            failover = dr["spec"]["trafficPolicy"]["loadBalancer"]["localityLbSetting"]["failover"]
            assert failover == [{"from": region, "to": fleet[region][0]}]  # as for the chart's regions
    stderr = render_error("--set", "global.regions={af-south}")
    assert 'global.regions: unknown region "af-south"' in stderr and "na-west, na-east" in stderr


# Maps documented as a whole (their keys are data, not settings).
OPAQUE = {"podSecurityContext", "containerSecurityContext", "routing.neighbours",
          "networkPolicy.metricsNamespaceSelector"}


def _leaf_paths(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in OPAQUE:
            yield from _leaf_paths(value, path + ".")
        else:
            yield path


KEY_LINE = re.compile(r"^(\s*)([A-Za-z0-9_./-]+):(.*)$")


def test_every_value_is_documented_in_values_yaml():
    """Every key that holds a value (not a mere namespace of keys) has a comment on or above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = KEY_LINE.match(line)
        if not m:
            continue
        indent, key, rest = m.groups()
        value = rest.split("#")[0].strip()
        following = [ln for ln in lines[i + 1:] if ln.strip() and not ln.strip().startswith("#")]
        nxt = following[0] if following else ""
        is_namespace = not value and len(nxt) - len(nxt.lstrip()) > len(indent) \
            and not nxt.strip().startswith("- ")
        if is_namespace:
            continue
        above = lines[i - 1].strip() if i else ""
        if "#" not in rest and not above.startswith("#"):
            undocumented.append(f"line {i + 1}: {key}")
    assert not undocumented


def test_readme_lists_every_value():
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [p for p in _leaf_paths(values) if f"| {p} |" not in readme]  # a row of the generated table
    assert not missing, missing
