#!/usr/bin/env bash
# Builds the Go-based tools GitWarden's checks and tests need (kube-apiserver,
# kube-controller-manager, etcd, opa, helm, kubeconform, kubeseal) from the Go module proxy, at
# the versions pinned by the go.mod/go.sum pairs under tools/go/. Each binary is cached outside
# the work tree, keyed by a hash of its go.mod, go.sum, build flags and Go version, so a fresh
# clone on the same machine reuses it; .tools/bin/ holds links to the cached binaries. Nothing here downloads a prebuilt binary.
#
# usage: tools/build-tools.sh [TOOL ...]     (default: all of them)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GITWARDEN_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gitwarden/tools}
bin="$root/.tools/bin"
mkdir -p "$cache" "$bin"

command -v go >/dev/null || { echo "build-tools: the Go toolchain is required (go not found on PATH)" >&2; exit 1; }
gover=$(go env GOVERSION)

kube_version=v1.35.4
kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kube_version \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=35 \
-X k8s.io/component-base/version.gitTreeState=clean"

# name | module folder under tools/go | main package | extra ldflags
spec() {
  case $1 in
    kube-apiserver) echo "kube|k8s.io/kubernetes/cmd/kube-apiserver|$kube_ldflags" ;;
    # Same wrapper module as kube-apiserver, so both come from one pinned k8s.io/kubernetes
    # release. tools/go/kube/go.mod names only kube-apiserver in its tool directive (adding a
    # second one would change the cache key of the already-built apiserver); its requirements
    # and go.sum already cover the controller manager, which -mod=readonly checks on every build.
    kube-controller-manager) echo "kube|k8s.io/kubernetes/cmd/kube-controller-manager|$kube_ldflags" ;;
    etcd)           echo "etcd|go.etcd.io/etcd/server/v3|-s -w" ;;
    opa)            echo "opa|github.com/open-policy-agent/opa|-s -w" ;;
    helm)           echo "helm|helm.sh/helm/v3/cmd/helm|-s -w" ;;
    kubeconform)    echo "kubeconform|github.com/yannh/kubeconform/cmd/kubeconform|-s -w" ;;
    kubeseal)       echo "kubeseal|github.com/bitnami-labs/sealed-secrets/cmd/kubeseal|-s -w" ;;
    *) echo "build-tools: unknown tool '$1'" >&2; exit 2 ;;
  esac
}

build() {
  local name=$1 dir pkg ldflags key out start
  IFS='|' read -r dir pkg ldflags <<<"$(spec "$name")"
  key=$( { cat "$root/tools/go/$dir/go.mod" "$root/tools/go/$dir/go.sum"; echo "$pkg $ldflags $gover"; } \
        | sha256sum | cut -c1-16)
  out="$cache/$name-$key/$name"
  if [ ! -x "$out" ]; then
    echo "build-tools: building $name ($pkg) ..." >&2
    start=$(date +%s)
    mkdir -p "$(dirname "$out")"
    CGO_ENABLED=0 go build -C "$root/tools/go/$dir" -mod=readonly -trimpath \
      -ldflags "$ldflags" -o "$out.tmp" "$pkg"
    mv "$out.tmp" "$out"
    echo "build-tools: built $name in $(( $(date +%s) - start ))s" >&2
  fi
  ln -sfn "$out" "$bin/$name"
}

tools=("$@")
[ ${#tools[@]} -gt 0 ] || tools=(kube-apiserver kube-controller-manager etcd opa helm kubeconform kubeseal)
for t in "${tools[@]}"; do build "$t"; done
