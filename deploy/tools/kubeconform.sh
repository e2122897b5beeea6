#!/usr/bin/env bash
# kubeconform, offline, against the schemas deploy/tools/install.sh put in the cache:
#   deploy/tools/kubeconform.sh FILE...        or      helm template ... | deploy/tools/kubeconform.sh -
# Core kinds: Kubernetes $FLYWHEEL_SCHEMA_K8S_VERSION (default 1.32.0) from kubernetes-validate,
# strict (unknown fields rejected). CRD kinds (Argo CD, prometheus-operator, KEDA): from
# @kubernetes-models npm packages (missing/mistyped fields rejected; unknown fields pass).
# Kinds with no schema fail. Extra kubeconform flags may precede the files.
set -euo pipefail
TOOLS=${FLYWHEEL_TOOLS:-$HOME/.cache/flywheel-tools}
S=$TOOLS/schemas
K8S=${FLYWHEEL_SCHEMA_K8S_VERSION:-1.32.0}
if [[ ! -x $TOOLS/bin/kubeconform || ! -d $S/k8s-v$K8S || ! -d $S/crds ]]; then
  echo "kubeconform.sh: kubeconform or its schemas missing in $TOOLS; run deploy/tools/install.sh" >&2
  exit 2
fi
exec "$TOOLS/bin/kubeconform" -strict -summary -kubernetes-version "$K8S" \
  -schema-location "$S/k8s-{{.NormalizedKubernetesVersion}}{{.StrictSuffix}}/{{.ResourceKind}}{{.KindSuffix}}.json" \
  -schema-location "$S/crds/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json" \
  "$@"
