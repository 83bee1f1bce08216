#!/usr/bin/env bash
# Pod networking for a kind cluster started with disableDefaultCNI (kindnetd cannot be had here):
# on every node a ptp + host-local CNI config for the node's own pod CIDR (spec.podCIDR, from the
# controller manager), and a route to each other node's pod CIDR via that node's address on the
# cluster's Docker network. Pods of different nodes reach each other; NetworkPolicy is NOT enforced.
#
#   lab/kind/cni.sh CLUSTER [CONTEXT [NODES]]   (kubectl's KUBECONFIG; context kind-CLUSTER by default;
#                                               NODES: how many nodes to wait for, default 1)
set -euo pipefail
cluster=$1 context=${2:-kind-$1} expect=${3:-1}
docker() { /usr/bin/docker "$@"; }
# every node has a pod CIDR once the controller manager saw it (a few seconds after it joined)
for _ in $(seq 1 60); do
  lines=$(kubectl --context "$context" get nodes -o \
    jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
  [ -n "$lines" ] && [ "$(wc -l <<< "$lines")" -ge "$expect" ] &&
    ! awk 'NF < 3 {bad=1} END {exit !bad}' <<< "$lines" && break
  sleep 1
done
awk 'NF < 3 {bad=1} END {exit bad}' <<< "$lines" && [ "$(wc -l <<< "$lines")" -ge "$expect" ] ||
  { echo "$cluster: wanted $expect nodes with a pod CIDR and an address, have: $lines" >&2; exit 1; }
while read -r node cidr _; do
  routes=$(awk -v me="$node" '$1 != me {printf "ip route replace %s via %s\n", $2, $3}' <<< "$lines")
  docker exec -i "$node" sh -ec "
sysctl -qw net.ipv4.ip_forward=1
$routes
cat > /etc/cni/net.d/10-icn-ptp.conflist.tmp <<JSON
{
  \"cniVersion\": \"1.0.0\",
  \"name\": \"icn-ptp\",
  \"plugins\": [
    {\"type\": \"ptp\", \"ipMasq\": false, \"mtu\": 1500,
     \"ipam\": {\"type\": \"host-local\", \"ranges\": [[{\"subnet\": \"$cidr\"}]],
                \"routes\": [{\"dst\": \"0.0.0.0/0\"}], \"dataDir\": \"/run/cni-ipam-state\"}}
  ]
}
JSON
mv /etc/cni/net.d/10-icn-ptp.conflist.tmp /etc/cni/net.d/10-icn-ptp.conflist
" < /dev/null
done <<< "$lines"
