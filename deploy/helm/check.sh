#!/usr/bin/env bash
# Validate the Flywheel Helm charts offline: derived files fresh, lint --strict, template
# (Kubernetes 1.32, with and without the CRD APIs), and kubeconform when it is installed.
#
#   deploy/helm/check.sh            # from the repository root (or anywhere)
#   HELM=/path/to/helm deploy/helm/check.sh
#
# Tools: ${FLYWHEEL_TOOLS:-$HOME/.cache/flywheel-tools}/bin/{helm,kubeconform} (deploy/tools/install.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TOOLS=${FLYWHEEL_TOOLS:-$HOME/.cache/flywheel-tools}
H=${HELM:-$TOOLS/bin/helm}
KC=${KUBECONFORM:-$TOOLS/bin/kubeconform}
SCHEMAS=$TOOLS/schemas
KUBE=${KUBE_VERSION:-1.32.0}
CRDS=(--api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1)
PY=${PYTHON:-}
if [[ -z $PY ]]; then
  if [[ -x $ROOT/.venv/bin/python ]]; then PY=$ROOT/.venv/bin/python; else PY="uv run python"; fi
fi
SERVICES=(ingest registry trainer serving monitor)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

[[ -x $H ]] || { echo "check: helm not found at $H (deploy/tools/install.sh helm)" >&2; exit 1; }
step() { echo "check: $*"; }

step "derived files (sync.py --check)"
(cd "$ROOT" && $PY deploy/helm/sync.py --check)

step "helm dependency update flywheel"
"$H" dependency update "$HERE/flywheel" >/dev/null

kubeconform() {  # stdin: manifests
  if [[ -x $KC && -d $SCHEMAS/k8s-v$KUBE-strict ]]; then
    "$KC" -strict -summary -ignore-missing-schemas \
      -schema-location "$SCHEMAS/k8s-v$KUBE-strict/{{.ResourceKind}}{{.KindSuffix}}.json" \
      -schema-location "$SCHEMAS/crds/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json" -
  else
    cat >/dev/null
  fi
}

render() {  # name chart args...
  local name=$1 chart=$2; shift 2
  "$H" template "$name" "$chart" --kube-version "$KUBE" "$@" >"$TMP/out.yaml"
  kubeconform <"$TMP/out.yaml" | sed 's/^/       /'
}

for svc in "${SERVICES[@]}"; do
  chart=$HERE/flywheel-$svc
  step "flywheel-$svc: lint --strict, template (default, with CRD APIs)"
  "$H" lint --strict "$chart" >/dev/null
  render "flywheel-$svc" "$chart"
  render "flywheel-$svc" "$chart" "${CRDS[@]}"
  all=(--set serviceMonitor.enabled=true,prometheusRule.enabled=true,networkPolicy.enabled=true,replicaCount=2)
  grep -q '^keda:' "$chart/values.yaml" && all+=(--set keda.enabled=true)
  [[ $svc == registry ]] && all+=(--set database.urlSecretRef.name=db,migrations.enabled=true)
  [[ $svc == registry || $svc == ingest ]] && all+=(--set auth.tokensSecret.name=tokens)
  [[ $svc == trainer ]] && all+=(--set executor=kubernetes,global.storage.uri=s3://bucket/store)
  "$H" lint --strict "$chart" "${all[@]}" >/dev/null
  render "flywheel-$svc" "$chart" "${all[@]}" "${CRDS[@]}"
done

for vals in "" "$HERE/values-dev.yaml" "$HERE/values-prod.yaml"; do
  args=(); label=default
  [[ -n $vals ]] && { args=(-f "$vals"); label=$(basename "$vals"); }
  step "flywheel ($label): lint --strict, template (default, with CRD APIs)"
  "$H" lint --strict "$HERE/flywheel" "${args[@]}" >/dev/null
  render flywheel "$HERE/flywheel" "${args[@]}"
  render flywheel "$HERE/flywheel" "${args[@]}" "${CRDS[@]}"
done

step "flywheel (strimzi): KafkaTopics"
render flywheel "$HERE/flywheel" --set strimzi.enabled=true --api-versions kafka.strimzi.io/v1beta2
n=$(grep -c '^kind: KafkaTopic$' "$TMP/out.yaml" || true)
[[ $n -gt 0 ]] || { echo "check: no KafkaTopic rendered" >&2; exit 1; }

step "CRD gating: nothing monitoring/keda without the APIs"
"$H" template flywheel "$HERE/flywheel" -f "$HERE/values-prod.yaml" --kube-version "$KUBE" >"$TMP/out.yaml"
if grep -qE '^kind: (ServiceMonitor|PrometheusRule|ScaledObject|TriggerAuthentication)$' "$TMP/out.yaml"; then
  echo "check: CRD-based objects rendered without their API" >&2; exit 1
fi

if command -v promtool >/dev/null; then
  step "promtool check rules (each chart's files/prometheus-rules.yaml)"
  for f in "$HERE"/flywheel*/files/prometheus-rules.yaml; do
    promtool check rules "$f" >/dev/null
  done
fi
step "ok"
