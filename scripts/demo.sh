#!/usr/bin/env bash
# `make demo`: start the seven-region lab (reusing a running one), deploy the Super-Nodes to it
# with deploy.yml, and print the lab's state. Expects the Makefile's PATH and KUBECONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 lab/icnlab.py up --regions "${REGIONS:-7}"
python3 lab/icnlab.py status
if [ -f deploy.yml ]; then
  ansible-playbook deploy.yml -i inventories/local
else
  echo "deploy.yml does not exist yet: the lab is up, nothing is deployed"
fi
echo
echo "The lab is still running. Three next steps to paste:"
echo "  . scripts/env.sh && kubectl --context icn-eu-west -n icn get pods -o wide   # a region's Super-Nodes"
echo "  . scripts/env.sh && ansible-playbook upgrade.yml -i inventories/local -e super_node_image_tag=v1.1.0   # the serial upgrade"
echo "  make lab-down   # stop the lab"
