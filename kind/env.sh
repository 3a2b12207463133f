# Sourced by the scripts beside it: the versions and cache paths of the kind rehearsal's cluster.
# Kubernetes is the test cluster's own build (tests/cluster/env.sh); each value can be overridden
# from the environment.
# shellcheck shell=bash
here_kind=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here_kind/../tests/cluster/env.sh"
# v0.30.0: the newest kind whose node entrypoint still handles a cgroup v1 host.
KIND_VERSION=${KIND_VERSION:-v0.30.0}
# What `kubeadm config images list --kubernetes-version $K8S_VERSION` names (kubeadm's
# constants.go at v1.33.13): a tag that differs becomes a pull, and no pull works here.
ETCD_VERSION=${ETCD_VERSION:-3.5.24}
ETCD_TAG=$ETCD_VERSION-0
PAUSE_TAG=${PAUSE_TAG:-3.10}
KIND_CACHE=${KIND_CACHE:-$CACHE_DIR/kind/$KIND_VERSION}
KIND_BIN=$KIND_CACHE/bin/kind
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-stackblitz-migrate/kind-node:$K8S_VERSION}
KIND_CONFIG=$here_kind/cluster.yaml
