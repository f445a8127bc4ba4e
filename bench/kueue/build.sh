#!/usr/bin/env bash
# Builds the Kueue manager (the peer the `peers` bench measures Berth's queue
# against) from the Go module proxy into a cache directory keyed by version,
# like deploy/local-cluster/build.sh does for the control plane. Nothing but
# Go modules is downloaded; a warm cache is a no-op. Prints the binary's
# directory on its last line.
#
# Kueue is a peer under test, not a dependency: nothing in Berth runs it.
set -euo pipefail

KUEUE_VERSION=${KUEUE_VERSION:-v0.17.0}   # newest Kueue whose go.mod builds with Go 1.26 here
cache=${BERTH_CACHE_DIR:-$HOME/.cache/berth}
bin="$cache/kueue-$KUEUE_VERSION/bin"

if [ -f "$bin/.complete" ]; then
  echo "kueue $KUEUE_VERSION already built: $bin" >&2
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
# Outside any module, so `go install pkg@version` uses Kueue's own go.mod.
cd "$(mktemp -d)"
start=$(date +%s)
echo "building kueue $KUEUE_VERSION into $bin" >&2
CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN="$bin" \
  go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
touch "$bin/.complete"
echo "built kueue in $(( $(date +%s) - start ))s" >&2
echo "$bin"
