# Sourced by the scripts beside it: where the single-node test cluster keeps its binaries, state
# and sockets. Each value can be overridden from the environment.
# shellcheck shell=bash
K8S_VERSION=${K8S_VERSION:-v1.33.13}
CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}
CACHE_DIR=${CACHE_DIR:-/var/cache/stackblitz-migrate}
K8S_BIN=${K8S_BIN:-$CACHE_DIR/k8s/$K8S_VERSION/bin}
STATE_DIR=${STATE_DIR:-/var/lib/stackblitz-migrate-cluster}
RUN_DIR=${RUN_DIR:-/run/sbm-cluster}
CONTAINERD_SOCK=$RUN_DIR/containerd/containerd.sock
KUBECONFIG_ADMIN=$STATE_DIR/admin.kubeconfig
NODE_NAME=${NODE_NAME:-sbm-node}
# The pods' bridge. Its address is the node IP (the kubelet refuses a loopback one) and the
# address at which pods reach the host. Both ranges are private to this machine.
BRIDGE=${BRIDGE:-sbm0}
BRIDGE_MAC=${BRIDGE_MAC:-02:73:62:6d:00:01}  # 02: locally administered
POD_CIDR=${POD_CIDR:-10.244.0.0/24}
HOST_IP=${HOST_IP:-10.244.0.1}
SERVICE_CIDR=${SERVICE_CIDR:-10.96.0.0/12}
SERVICE_IP=${SERVICE_IP:-10.96.0.1}
APISERVER_PORT=${APISERVER_PORT:-6443}
ETCD_PORT=${ETCD_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
PAUSE_IMAGE=${PAUSE_IMAGE:-localhost/stackblitz-migrate/pause:1}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-stackblitz-migrate/postgres:15}
PATH=$K8S_BIN:$PATH:/usr/sbin:/sbin
export KUBECONFIG=$KUBECONFIG_ADMIN
ctr_() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }
crictl_() {
  "$K8S_BIN/crictl" --config /dev/null --runtime-endpoint "unix://$CONTAINERD_SOCK" \
    --image-endpoint "unix://$CONTAINERD_SOCK" --timeout 30s "$@"
}
