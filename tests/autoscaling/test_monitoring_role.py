"""The monitoring role against a lab region in which a prometheus-adapter is present: its
bandwidth rule goes into the adapter's config (other rules kept), the adapter rolls to load it,
check mode writes nothing, and a second run changes nothing.

The Deployment here is one more kwok pod in a namespace of the test's, and its config is only
read back; the lab's real adapter (monitoring/prometheus-adapter, tests/autoscaling) is not touched."""
from __future__ import annotations

import hashlib
import uuid

import pytest
import yaml
from kubernetes import client

from playbook import local_inventory, run_playbook

pytestmark = pytest.mark.multi
ADAPTER = "prometheus-adapter"
# What a prometheus-adapter chart typically ships: a rule of its own, and resource rules.
OTHER_RULE = {"seriesQuery": '{__name__=~"^container_.*",namespace!="",pod!=""}',
              "resources": {"overrides": {"namespace": {"resource": "namespace"},
                                          "pod": {"resource": "pod"}}},
              "name": {"matches": "^container_(.*)_seconds_total$", "as": ""},
              "metricsQuery": "sum(rate(<<.Series>>{<<.LabelMatchers>>}[5m])) by (<<.GroupBy>>)"}
CONFIG = yaml.safe_dump({"rules": [OTHER_RULE],
                         "resourceRules": {"cpu": {"containerQuery": "sum(rate(x[3m]))"}}})


@pytest.fixture(scope="module")
def region_lab(lab_manager):
    ctx, c = next(iter(lab_manager.ensure("multi").items()))
    return ctx.removeprefix("icn-"), c


@pytest.fixture
def adapter(region_lab):
    """A namespace holding a prometheus-adapter Deployment and its config ConfigMap."""
    _, c = region_lab
    ns = f"t-adapter-{uuid.uuid4().hex[:6]}"
    c.create_namespace(ns)
    labels = {"app.kubernetes.io/name": ADAPTER}
    c.core.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=ADAPTER), data={"config.yaml": CONFIG}))
    c.apps.create_namespaced_deployment(ns, client.V1Deployment(
        metadata=client.V1ObjectMeta(name=ADAPTER, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(
                    name=ADAPTER, image="registry.k8s.io/prometheus-adapter/prometheus-adapter:v0.12.0",
                    args=["--config=/etc/adapter/config.yaml"])])))))
    yield ns
    c.delete_namespace(ns)


def run_role(tmp_path, region, ns, *args):
    playbook = tmp_path / "monitoring.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "The monitoring role alone", "hosts": "super_nodes", "gather_facts": False,
        "module_defaults": {"group/icn.super_node.cluster": {
            "kubeconfig": "{{ super_node_kubeconfig }}", "context": "{{ super_node_kube_context }}"}},
        "roles": [{"role": "icn.super_node.monitoring"}]}]))
    inv = local_inventory(tmp_path, regions=[region])
    return run_playbook(str(playbook), inv, "-e", f"monitoring_adapter_namespace={ns}", *args,
                        tmp_path=tmp_path)


def test_the_bandwidth_rule_goes_into_the_adapters_config(region_lab, adapter, tmp_path):
    region, c = region_lab
    ns = adapter

    def live():
        cm = c.core.read_namespaced_config_map(ADAPTER, ns).data["config.yaml"]
        dep = c.apps.read_namespaced_deployment(ADAPTER, ns)
        return cm, dep.metadata.generation, dep.spec.template.metadata.annotations or {}

    before = live()
    run = run_role(tmp_path, region, ns, "--check", "--diff")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed() == 1, "check mode reports the change"
    assert "network_bandwidth_utilization" in run.output, "the diff shows the rule"
    assert live() == before, "check mode writes nothing"

    run = run_role(tmp_path, region, ns)
    assert run.rc == 0, run.output[-4000:]
    assert run.changed() == 1
    config_text, generation, annotations = live()
    config = yaml.safe_load(config_text)
    assert config["resourceRules"] == {"cpu": {"containerQuery": "sum(rate(x[3m]))"}}
    assert config["rules"][0] == OTHER_RULE, "the adapter's own rules are kept"
    rule = config["rules"][1]
    assert rule["name"] == {"matches": "^icn_super_node_network_bytes_total$",
                            "as": "network_bandwidth_utilization"}
    assert rule["seriesQuery"] == 'icn_super_node_network_bytes_total{namespace!="",pod!=""}'
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                              "pod": {"resource": "pod"}}
    # The lab's rate window (inventories/local: 20s; the role's default is 2m).
    assert rule["metricsQuery"] == ("sum by (<<.GroupBy>>) (rate(<<.Series>>{<<.LabelMatchers>>}"
                                    "[20s])) * 8"), "bytes/s to bits/s"
    # The adapter reads its config at start: the pod template changes with it, so it rolls.
    assert annotations["icn.network/adapter-config-checksum"] == \
        hashlib.sha256(config_text.encode()).hexdigest()
    assert generation == before[1] + 1
    assert run.summary["regions"][region]["autoscaling"] == "bandwidth+cpu"

    again = run_role(tmp_path, region, ns)
    assert again.rc == 0 and again.changed() == 0, again.output[-4000:]
    assert live() == (config_text, generation, annotations)


def test_without_an_adapter_nothing_is_written(region_lab, tmp_path):
    region, c = region_lab
    run = run_role(tmp_path, region, f"t-none-{uuid.uuid4().hex[:6]}")
    assert run.rc == 0 and run.changed() == 0, run.output[-4000:]
    assert run.summary["regions"][region]["autoscaling"] == "bandwidth+cpu"
