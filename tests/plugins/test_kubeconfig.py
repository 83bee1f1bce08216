"""How the modules' Kubernetes client reads a kubeconfig (plugins/module_utils/kube.py KubeClient),
from temporary kubeconfig files: the context chosen, the server, client certificates and CA (files
or -data), bearer tokens (inline or tokenFile), basic auth, and the errors that name what is wrong.
No request is made."""
from __future__ import annotations

import base64
import os
import sys

import pytest
import yaml

from labkit import ROOT

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.module_utils.kube import (  # noqa: E402
    KubeClient, KubeError, describe_context)

PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def write(tmp_path, contexts, current=None, name="kubeconfig"):
    """contexts: {name: (cluster dict, user dict or None)}."""
    config = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    for ctx, (cluster, user) in contexts.items():
        config["clusters"].append({"name": f"c-{ctx}", "cluster": cluster})
        context = {"cluster": f"c-{ctx}"}
        if user is not None:
            config["users"].append({"name": f"u-{ctx}", "user": user})
            context["user"] = f"u-{ctx}"
        config["contexts"].append({"name": ctx, "context": context})
    if current:
        config["current-context"] = current
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_the_named_context_and_its_server(tmp_path):
    path = write(tmp_path, {"a": ({"server": "https://a.example:6443/"}, {"token": "ta"}),
                            "b": ({"server": "https://b.example:6443"}, {"token": "tb"})}, current="a")
    with KubeClient(path, "b") as kube:
        assert kube.host == "https://b.example:6443"
        assert kube.headers == {"Authorization": "Bearer tb"}
    with KubeClient(path) as kube:  # no context: the kubeconfig's current one
        assert kube.host == "https://a.example:6443"  # without the trailing slash
        assert kube.headers == {"Authorization": "Bearer ta"}


def test_the_kubeconfig_environment_variable_is_the_default(tmp_path, monkeypatch):
    path = write(tmp_path, {"a": ({"server": "https://a.example"}, {"token": "t"})}, current="a")
    monkeypatch.setenv("KUBECONFIG", path + os.pathsep + "/nonexistent")
    with KubeClient() as kube:
        assert kube.host == "https://a.example"


# Certificates, keys and CAs, inline or as files, are tested against a real TLS server in
# test_kube_client.py (test_tls_server_name_client_key_data_and_no_key_file_left and the tests after it).


def test_a_token_file_is_relative_to_the_kubeconfig(tmp_path):
    (tmp_path / "token").write_text("file-token\n")
    path = write(tmp_path, {"a": ({"server": "https://a.example", "insecure-skip-tls-verify": True},
                                  {"tokenFile": "token"})})
    with KubeClient(path, "a") as kube:
        assert kube.headers == {"Authorization": "Bearer file-token"}


def test_basic_auth_and_insecure_skip_tls_verify(tmp_path):
    path = write(tmp_path, {"a": ({"server": "https://a.example", "insecure-skip-tls-verify": True},
                                  {"username": "admin", "password": "secret"}),
                            "b": ({"server": "http://b.example"}, None)})
    with KubeClient(path, "a") as kube:
        assert kube.headers == {"Authorization": "Basic " + b64(b"admin:secret")}
        assert kube.http.connection_pool_kw["cert_reqs"] == "CERT_NONE"
    with KubeClient(path, "b") as kube:  # a context without a user: no credentials
        assert kube.headers == {}


@pytest.mark.parametrize("change, says", [
    ({"context": "nowhere"}, "context 'nowhere' is not in {path} (contexts: a)"),
    ({"drop": "clusters"}, "cluster 'c-a' is not in {path} (clusters: none)"),
    ({"drop": "users"}, "user 'u-a' is not in {path} (users: none)"),
    ({"server": ""}, "cluster c-a of {path} has no server"),
])
def test_errors_name_what_is_missing(tmp_path, change, says):
    path = write(tmp_path, {"a": ({"server": change.get("server", "https://a.example")}, {"token": "t"})})
    if "drop" in change:
        config = yaml.safe_load(open(path))
        config[change["drop"]] = []
        open(path, "w").write(yaml.safe_dump(config))
    with pytest.raises(KubeError) as err:
        KubeClient(path, change.get("context", "a"))
    assert str(err.value) == says.format(path=path)


def test_an_unreadable_kubeconfig_is_named(tmp_path):
    with pytest.raises(KubeError, match=f"cannot read kubeconfig {tmp_path}/nowhere"):
        KubeClient(str(tmp_path / "nowhere"), "a")
    (tmp_path / "bad").write_text("clusters: [")
    with pytest.raises(KubeError, match="cannot read kubeconfig"):
        KubeClient(str(tmp_path / "bad"), "a")


def test_describe_context():
    assert describe_context("icn-apac") == "context icn-apac"
    assert describe_context(None) == "the kubeconfig's current context"
