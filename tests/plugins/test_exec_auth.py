"""Logging in through exec credential plugins (#11), against a lab API server: a kubeconfig whose
region user is a fake plugin (tests/exec-plugins) that prints a ServiceAccount token the lab
accepts. The good plugin reads, writes and deploys; each bad one fails the task with the plugin's
own message and the region's context named, within the request timeout. K8S_AUTH_KUBECONFIG and
K8S_AUTH_CONTEXT (as AWX sets them) point the modules at the cluster."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from labkit import ROOT
from playbook import local_inventory, module_command, module_env, module_result, run_playbook

pytestmark = pytest.mark.multi

PLUGINS = ROOT / "tests" / "exec-plugins"
ACCOUNT = "icn-exec-login"


def ignore_conflict(call, *args):
    try:
        call(*args)
    except ApiException as err:
        if err.status != 409:
            raise


@pytest.fixture(scope="module")
def login(lab, tmp_path_factory):
    """(region, cluster, token file): a cluster-admin ServiceAccount's token, which the good
    plugin prints (ICN_FAKE_TOKEN_FILE)."""
    region, cluster = next(iter(lab.items()))
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    ignore_conflict(cluster.core.create_namespaced_service_account, "kube-system",
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT}})
    ignore_conflict(rbac.create_cluster_role_binding, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": ACCOUNT},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": "kube-system"}]})
    token = cluster.core.create_namespaced_service_account_token(
        ACCOUNT, "kube-system", {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                 "spec": {"expirationSeconds": 3600}}).status.token
    path = tmp_path_factory.mktemp("login") / "token"
    path.write_text(token)
    path.chmod(0o600)
    yield region, cluster, path
    rbac.delete_cluster_role_binding(ACCOUNT)
    cluster.core.delete_namespaced_service_account(ACCOUNT, "kube-system")


def exec_kubeconfig(tmp_path: Path, cluster, plugin: str, token_file: Path,
                    mode: str = "IfAvailable") -> Path:
    """The lab's kubeconfig, the region's user replaced by an exec plugin (other contexts as they
    were, so a playbook can run on it)."""
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    for user in config["users"]:
        if user["name"] == cluster.context:
            user["user"] = {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1", "command": str(PLUGINS / plugin),
                "interactiveMode": mode, "provideClusterInfo": False,
                "env": [{"name": "ICN_FAKE_TOKEN_FILE", "value": str(token_file)}]}}
    path = tmp_path / f"kubeconfig-{plugin}"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def run_module(module: str, args: dict, env: dict | None = None) -> tuple[dict, float]:
    started = time.monotonic()
    proc = subprocess.run(module_command(f"icn.super_node.{module}", args),
                          env=dict(module_env(), **(env or {})), cwd=ROOT, text=True,
                          capture_output=True, timeout=180)
    return module_result(proc), time.monotonic() - started


def test_a_good_exec_plugin_reads_and_writes(login, tmp_path, namespace_in):
    region, cluster, token = login
    target = {"kubeconfig": str(exec_kubeconfig(tmp_path, cluster, "good", token)),
              "context": cluster.context}

    info, _ = run_module("cluster_info", target)
    assert not info.get("failed"), info["msg"]
    assert info["version"].startswith("1.") and "apps/v1" in info["apis"]

    health, _ = run_module("region_health", dict(target, regions=[region], fail_on_unhealthy=False))
    assert not health.get("failed"), health["msg"]
    assert region in health["regions"]

    ns = namespace_in(cluster)
    applied, _ = run_module("k8s_apply", dict(target, field_manager="icn-exec-test", definitions=[
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "exec-login", "namespace": ns},
         "data": {"via": "exec"}}]))
    assert applied["changed"] is True, applied.get("msg")
    written = cluster.core.read_namespaced_config_map("exec-login", ns)
    managers = {f.manager for f in written.metadata.managed_fields}
    assert written.data == {"via": "exec"} and "icn-exec-test" in managers


def test_k8s_auth_variables_point_the_modules_at_the_cluster(login, tmp_path):
    region, cluster, token = login
    env = {"K8S_AUTH_KUBECONFIG": str(exec_kubeconfig(tmp_path, cluster, "good", token)),
           "K8S_AUTH_CONTEXT": cluster.context, "KUBECONFIG": str(tmp_path / "not-this-one")}
    info, _ = run_module("cluster_info", {}, env)
    assert not info.get("failed"), info["msg"]
    unknown, _ = run_module("cluster_info", {}, dict(env, K8S_AUTH_CONTEXT="icn-nowhere"))
    assert unknown["failed"] is True and "context icn-nowhere" in unknown["msg"]


BAD_PLUGINS = [
    ("fail", "IfAvailable", "exited with 1: Error loading SSO Token: the SSO session associated "
                            "with this profile has expired"),
    ("garbage", "IfAvailable", "printed no ExecCredential: its output (84 bytes) is not JSON"),
    ("wrong-api", "IfAvailable", "printed an ExecCredential of apiVersion "
                                 "'client.authentication.k8s.io/v1alpha1', not the "
                                 "client.authentication.k8s.io/v1 the kubeconfig asks for"),
    ("interactive", "IfAvailable", "exited with 2: error: a browser login is needed and there is "
                                   "no terminal to ask for it"),
    ("interactive", "Always", "needs an interactive login (users[{context}].user.exec.interactiveMode: "
                              "Always), and a playbook has no terminal: log in first"),
    ("hang", "IfAvailable", "did not finish within 3s (killed)"),
]


@pytest.mark.parametrize("plugin, mode, says", BAD_PLUGINS,
                         ids=[f"{p}-{m}" for p, m, _ in BAD_PLUGINS])
@pytest.mark.parametrize("module", ["cluster_info", "region_health"])
def test_a_bad_exec_plugin_fails_with_its_message_and_the_region(login, tmp_path, plugin, mode,
                                                                 says, module):
    region, cluster, token = login
    args = {"kubeconfig": str(exec_kubeconfig(tmp_path, cluster, plugin, token, mode)),
            "context": cluster.context, "request_timeout": 3}
    if module == "region_health":
        args["regions"] = [region]
    result, took = run_module(module, args)
    assert result["failed"] is True
    assert result["msg"].startswith(f"context {cluster.context}: "), result["msg"]
    assert says.format(context=cluster.context) in result["msg"], result["msg"]
    assert "401" not in result["msg"] and "not-to-be-shown" not in result["msg"]
    # The plugin's run is bounded by request_timeout (3 s); the rest is Ansible's start-up.
    assert took < 25, f"{plugin} took {took:.0f}s to fail"


def test_a_region_deploys_through_an_exec_plugin(login, tmp_path):
    """deploy.yml on the one region whose user logs in through the good plugin: helm runs the
    plugin itself (client-go), the collection's modules run it through module_utils/kube.py."""
    region, cluster, token = login
    kubeconfig = exec_kubeconfig(tmp_path, cluster, "good", token)
    run = run_playbook("deploy.yml", local_inventory(tmp_path, regions=[region], kubeconfig=kubeconfig),
                       tmp_path=tmp_path)
    assert run.rc == 0, run.output[-6000:]
    assert run.failed_hosts() == []
    pods = cluster.ready_pods("icn", f"icn.network/region={region}")
    assert len(pods) >= 2
