# syntax=docker/dockerfile:1
# The GitWarden image the chart runs: the `gitwarden` command (webhook, reconciler, CLI) and the
# opa binary its OPA sidecar and the commit policy use, as a non-root user.
#
# Pinned: the base images by tag (replace the tags with @sha256 digests when you mirror them into
# your registry; this repository names no registry host), Python packages by constraints.txt
# (the versions CI tested), OPA by tools/go/opa/go.mod + go.sum (the version the tests run).
#
#   docker build -t gitwarden:0.1.0 .
#   docker run --rm gitwarden:0.1.0 --version

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm
ARG GO_IMAGE=golang:1.26.8-bookworm

# ---------------------------------------------------------------------------- opa, from source
FROM ${GO_IMAGE} AS opa
WORKDIR /src
COPY tools/go/opa/ ./
RUN CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" \
      -o /out/opa github.com/open-policy-agent/opa \
 && /out/opa version

# ---------------------------------------------------------------------------- Python packages
FROM ${PYTHON_IMAGE} AS wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY webhook/ webhook/
COPY reconciler/ reconciler/
COPY gitwarden_cli/ gitwarden_cli/
# --only-binary: every pinned package ships a manylinux wheel; nothing is compiled here.
RUN python -m venv /opt/gitwarden \
 && /opt/gitwarden/bin/pip install --only-binary=:all: -c constraints.txt . \
 && /opt/gitwarden/bin/gitwarden --version

# ---------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
# git (fetch), OpenSSH's client (ssh:// sources, strict host keys), the CA store (https://).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 gitwarden \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin gitwarden
COPY --from=wheels /opt/gitwarden /opt/gitwarden
COPY --from=opa /out/opa /usr/local/bin/opa
ENV PATH=/opt/gitwarden/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
ENTRYPOINT ["gitwarden"]
CMD ["--help"]
