# Source this file (`. scripts/env.sh`) to get, in your shell, what the Makefile puts on its own
# PATH: the project's virtualenv and the lab's tools (kubectl, helm, kwokctl, etcd), and the lab's
# kubeconfig as KUBECONFIG.
_icn_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
# shellcheck source=/dev/null
. "$_icn_root/lab/versions.env"
_icn_tools=${ICN_TOOLS_CACHE:-$HOME/.cache/icn-super-node/tools}
export PATH="$_icn_root/.venv/bin:$_icn_tools/kubernetes-$K8S_VERSION/bin:$_icn_tools/helm-$HELM_VERSION/bin:$_icn_tools/kwok-$KWOK_VERSION/bin:$_icn_tools/etcd-$ETCD_VERSION/bin:$_icn_tools/istio-$ISTIO_MODULE_VERSION/bin:$_icn_tools/prometheus-$PROMETHEUS_VERSION/bin:$PATH"
export KUBECONFIG="$_icn_root/.lab/kubeconfig"
export ANSIBLE_CONFIG="$_icn_root/ansible.cfg"
unset _icn_root _icn_tools
