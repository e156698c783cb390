#!/usr/bin/env bash
# Builds the GitWarden image with buildah from a locally made root filesystem, for machines
# that reach no container registry (the Dockerfile needs base images from one). Needs root,
# mmdebstrap and buildah (Debian packages), the venv (make venv) and the tools (make tools).
#
# usage: tools/image/build-local.sh [WORKDIR]    (default: a new temporary directory)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/gitwarden-image.XXXXXX)}
mkdir -p "$work"
version=$("$root/.venv/bin/python" -c 'import tomllib; print(tomllib.load(open("'"$root"'/pyproject.toml","rb"))["project"]["version"])')

[ -f "$work/rootfs.tar" ] || mmdebstrap --variant=minbase \
  --include=python3,python3-venv,git,openssh-client,ca-certificates bookworm "$work/rootfs.tar"
rm -rf "$work/dist" "$work/wheelhouse"
"$root/.venv/bin/pip" wheel --quiet --no-deps -w "$work/dist" "$root"
"$root/.venv/bin/pip" download --quiet --only-binary=:all: -c "$root/constraints.txt" \
  -d "$work/wheelhouse" "$work"/dist/gitwarden-*.whl
cp "$root/constraints.txt" "$work/"
cp "$(readlink -f "$root/.tools/bin/opa")" "$work/opa"
cp "$root/tools/image/Containerfile.rootfs" "$work/Containerfile"
buildah --storage-driver vfs bud --isolation chroot --layers=false \
  -t "localhost/gitwarden:$version" -f "$work/Containerfile" "$work"
buildah --storage-driver vfs images "localhost/gitwarden:$version"
