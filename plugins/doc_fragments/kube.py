# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations


class ModuleDocFragment:
    # How the collection's Kubernetes modules reach a cluster (module_utils/kube.py).
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path of the kubeconfig file.
      - Defaults to the E(K8S_AUTH_KUBECONFIG) environment variable (as M(kubernetes.core.k8s)
        reads it; AWX's Kubernetes credentials set it), else the files of E(KUBECONFIG) (merged as
        kubectl merges them), else C(~/.kube/config).
      - Users may log in with a token, a token file, a client certificate, basic auth, or an exec
        credential plugin (C(client.authentication.k8s.io/v1) or C(v1beta1), such as
        C(aws eks get-token), C(gke-gcloud-auth-plugin) or C(kubelogin)). The plugin runs without a terminal, for at most
        O(request_timeout) seconds; one that fails fails the task with its own message, one whose
        C(interactiveMode) is C(Always) is refused (log in first). C(auth-provider) and
        impersonation (C(as), C(as-groups)) are refused, naming the field.
      - A cluster's C(proxy-url) (http, https; socks5 with PySocks installed) and
        C(tls-server-name) are honoured; without C(proxy-url), E(HTTPS_PROXY), E(HTTP_PROXY) and
        E(NO_PROXY) are, as kubectl reads them. A task's C(environment) reaches the module.
    type: path
  context:
    description:
      - The kubeconfig context of the region's cluster, for example C(icn-eu-west).
      - Defaults to the E(K8S_AUTH_CONTEXT) environment variable, else the kubeconfig's current
        context.
    type: str
  api_grace:
    description:
      - Seconds a read (and a server-side apply) is tried again while the API server does not
        answer, answers HTTP 429 (after its C(Retry-After)) or 5xx, with backoff from 0.25 s to
        4 s; the task fails with the last error only once the failure has lasted this long. Other
        errors (403, 404, 409, a certificate that does not verify) fail at once, and other writes
        are never retried.
      - A frozen API server costs at most this plus one O(request_timeout).
      - V(0) tries each request once.
    type: float
    default: 30
"""
