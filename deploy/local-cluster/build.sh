#!/usr/bin/env bash
# Builds Berth's local cluster from Go modules, into a cache directory keyed
# by the hash of every input (go.mod/go.sum, our own Go sources, this script):
# the control plane (etcd, kube-apiserver, kube-scheduler,
# kube-controller-manager, kwok) and the real node's parts (kubelet,
# kube-proxy, Berth's fake-GPU device plugin, CoreDNS from ../coredns, and the
# pause binary from the pause.c that ships in the Kubernetes module).
#
# Nothing is downloaded but Go modules from the module proxy. A warm cache is
# a no-op; prints the binary directory on its last line.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_VERSION=v1.36.3    # must match the require line in go.mod
KWOK_VERSION=v0.8.0    # newest kwok whose go.mod builds with Go 1.26
ETCD_VERSION=v3.6.8    # the etcd server Kubernetes v1.36.3 pins in its go.mod

coredns="$here/../coredns"
key=$(cat "$here/go.mod" "$here/go.sum" "$here/build.sh" "$here/deviceplugin/main.go" \
  "$coredns/go.mod" "$coredns/go.sum" "$coredns/main.go" | sha256sum | cut -c1-16)
cache=${BERTH_CACHE_DIR:-$HOME/.cache/berth}
bin="$cache/local-cluster-$key/bin"

if [ -f "$bin/.complete" ]; then
  echo "local control plane already built: $bin" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

start=$(date +%s)
step() { echo "[$(( $(date +%s) - start ))s] $*" >&2; }

cd "$here"
step "downloading modules"
go mod download
n=0
total=10
for pkg in go.etcd.io/etcd/server/v3:etcd \
           k8s.io/kubernetes/cmd/kube-apiserver:kube-apiserver \
           k8s.io/kubernetes/cmd/kube-scheduler:kube-scheduler \
           k8s.io/kubernetes/cmd/kube-controller-manager:kube-controller-manager \
           k8s.io/kubernetes/cmd/kubelet:kubelet \
           k8s.io/kubernetes/cmd/kube-proxy:kube-proxy \
           ./deviceplugin:berth-device-plugin; do
  n=$((n + 1))
  out=${pkg##*:}
  step "building $out ($n/$total)"
  go build -trimpath -ldflags "$ldflags" -o "$bin/$out" "${pkg%%:*}"
done
step "building pause (8/$total)"
# Static, so it runs in an image that has nothing else (the pod sandbox).
gcc -Os -static -o "$bin/pause" "$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
step "building coredns (9/$total)"
(cd "$coredns" && go mod download && go build -trimpath -ldflags "-s -w" -o "$bin/coredns" .)
step "building kwok $KWOK_VERSION (10/$total)"
# go install (not go build in this module): kwok pins its own k8s.io versions.
GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"

echo "k8s=$K8S_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION built_seconds=$(( $(date +%s) - start ))" > "$bin/.complete"
step "done"
echo "$bin"
