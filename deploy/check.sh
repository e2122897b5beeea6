#!/usr/bin/env bash
# make deploy-check: every deploy file checked by the real tool. Installs the tools first
# (deploy/tools/install.sh, cached in ${FLYWHEEL_TOOLS:-~/.cache/flywheel-tools}).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.local/bin:$PATH"
UV=$(command -v uv || echo "python3 -m uv")
RUN="$UV run --frozen"
TOOLS=${FLYWHEEL_TOOLS:-$HOME/.cache/flywheel-tools}
HELM=$TOOLS/bin/helm
step() { printf '\ndeploy-check: %s\n' "$*"; }

step "tools"
bash deploy/tools/install.sh

step "helm charts: derived files (helpers, topics, schemas, value tables) up to date"
$RUN python deploy/helm/sync.py --check

if [[ -d deploy/helm/flywheel ]]; then
  CHARTS=(deploy/helm/flywheel-* deploy/helm/flywheel)
  step "helm lint --strict (${#CHARTS[@]} charts)"
  "$HELM" dependency update deploy/helm/flywheel >/dev/null
  for chart in "${CHARTS[@]}"; do
    [[ -f $chart/Chart.yaml ]] || continue
    "$HELM" lint --strict "$chart"
  done
  "$HELM" lint --strict deploy/helm/flywheel -f deploy/helm/values-prod.yaml
  step "helm template | kubeconform (default and production values, with and without the CRDs)"
  CRDS=(--api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1 --api-versions kafka.strimzi.io/v1beta2)
  for values in "" "-f deploy/helm/values-prod.yaml"; do
    # shellcheck disable=SC2086
    "$HELM" template flywheel deploy/helm/flywheel --kube-version 1.32.0 $values \
      | bash deploy/tools/kubeconform.sh -
    # shellcheck disable=SC2086
    "$HELM" template flywheel deploy/helm/flywheel --kube-version 1.32.0 $values "${CRDS[@]}" \
      | bash deploy/tools/kubeconform.sh -
  done
fi

step "GitOps: Argo CD AppProject, ApplicationSet and Applications against their schemas"
bash deploy/tools/kubeconform.sh deploy/gitops/*.yaml

step "images: the Dockerfile's targets, chart image names and ports, compose.yaml agree"
$RUN pytest -q -p no:cacheprovider deploy/checks/test_images.py

step "compose: docker compose config (the compose file and its interpolations)"
COMPOSE=$TOOLS/bin/docker-compose
"$COMPOSE" -f deploy/compose/compose.yaml config --quiet
"$COMPOSE" -f deploy/compose/compose.yaml config --services | tr '\n' ' '; echo

step "Prometheus rules (promtool check + test) and Grafana dashboards"
$RUN python deploy/checks/observability.py
$RUN pytest -q -p no:cacheprovider deploy/checks/test_observability.py

step "a real kube-apiserver: the fixture, helm install + upgrade, the trainer's Kubernetes executor"
$RUN pytest -q -p no:cacheprovider -m kube shared/tests/test_kube_fixture.py \
  deploy/checks/test_helm_install.py services/trainer/tests/test_kube_executor.py

step "all checks passed"
