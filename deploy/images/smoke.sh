#!/usr/bin/env bash
# make images-smoke: the five images (built by `make images`) run together as containers
# against a real Kafka broker, and the first loop turn goes through them: the fraud spec is
# applied, simulated data goes into ingest, the trainer container trains and registers v1, the
# serving container loads it and answers a prediction, and `flywheel status` sees every
# service ready. Containers use the host network (no bridge is needed) and one named volume as
# the shared store, the way the dev chart shares one PVC; root filesystems are read-only.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.local/bin:$PATH" BENTOML_DO_NOT_TRACK=true
UV=$(command -v uv || echo "python3 -m uv")
RUN="$UV run --frozen"
STATE=${FLYWHEEL_IMAGES_STATE:-.flywheel/images}
mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
ROWS=${SMOKE_ROWS:-6000}
TIMEOUT=${SMOKE_TIMEOUT:-300}

log() { echo "smoke: $*"; }
die() { echo "smoke: ERROR: $*" >&2; exit 1; }
now() { date +%s; }
# shellcheck source=deploy/images/lib.sh
source deploy/images/lib.sh

ID=flywheel-smoke-$$
PREFIX=smoke$$
VOLUME=$ID-data
KAFKA_DIR=$STATE/smoke-kafka
CONTAINERS=()
cleanup() {
  local rc=$?
  if (( rc != 0 )) && (( ${#CONTAINERS[@]} )); then
    for c in "${CONTAINERS[@]}"; do
      echo "--- last lines of $c"; docker logs --tail 15 "$c" 2>&1 || true
    done
  fi
  (( ${#CONTAINERS[@]} )) && docker rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
  docker volume rm "$VOLUME" >/dev/null 2>&1 || true
  $RUN python -m flywheel_devkit.kafka stop --data-dir "$KAFKA_DIR" >/dev/null 2>&1 || true
  rm -rf "$KAFKA_DIR"
  stop_dockerd
  exit "$rc"
}
trap cleanup EXIT

T0=$(now)
engine
for svc in ingest registry trainer serving monitor; do
  docker image inspect "flywheel/$svc:$(version_of "$svc")" >/dev/null 2>&1 \
    || die "flywheel/$svc:$(version_of "$svc") is not built: run make images"
done

log "a Kafka broker (KRaft) on the host"
KAFKA=$($RUN python -m flywheel_devkit.kafka start --port 0 --data-dir "$KAFKA_DIR")
log "kafka at $KAFKA, topic prefix $PREFIX"

declare -A PORT
for svc in ingest registry trainer serving monitor; do PORT[$svc]=$(free_port); done
REGISTRY_URL=http://127.0.0.1:${PORT[registry]}
common=(--network host --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges
        -e "FLYWHEEL_KAFKA_BOOTSTRAP=$KAFKA" -e "FLYWHEEL_KAFKA_TOPIC_PREFIX=$PREFIX")

log "topics: flywheel topics (the chart's hook Job, from the registry image)"
docker run --rm "${common[@]}" "flywheel/registry:$(version_of registry)" flywheel topics

start() {  # start SERVICE [docker run options...]
  local svc=$1 upper
  shift
  upper=$(echo "$svc" | tr '[:lower:]' '[:upper:]')
  docker run -d --name "$ID-$svc" "${common[@]}" \
    -e "FLYWHEEL_${upper}_HOST=127.0.0.1" -e "FLYWHEEL_${upper}_PORT=${PORT[$svc]}" \
    "$@" "flywheel/$svc:$(version_of "$svc")" >/dev/null
  CONTAINERS+=("$ID-$svc")
  log "$svc: container $ID-$svc on 127.0.0.1:${PORT[$svc]}"
}
data=(--mount "type=volume,src=$VOLUME,dst=/var/lib/flywheel")
start registry "${data[@]}"
for svc in ingest trainer monitor; do
  upper=$(echo "$svc" | tr '[:lower:]' '[:upper:]')
  start "$svc" "${data[@]}" -e "FLYWHEEL_${upper}_REGISTRY_URL=$REGISTRY_URL"
done
start serving -e "FLYWHEEL_SERVING_REGISTRY_URL=$REGISTRY_URL" -e FLYWHEEL_SERVING_WORKERS=1

log "waiting until Docker reports every container healthy"
deadline=$(( $(now) + TIMEOUT ))
for c in "${CONTAINERS[@]}"; do
  while :; do
    status=$(docker inspect --format '{{.State.Status}}/{{.State.Health.Status}}' "$c")
    [[ $status == running/healthy ]] && break
    [[ $status == running/* ]] || die "$c is $status"
    (( $(now) < deadline )) || die "$c is still $status after ${TIMEOUT}s"
    sleep 1
  done
  log "$c healthy"
done

log "the fraud spec into the registry, $ROWS simulated rows into ingest"
$RUN flywheel models --registry-url "$REGISTRY_URL" apply-spec examples/fraud/flywheel.yaml
$RUN flywheel simulate fraud --ingest-url "http://127.0.0.1:${PORT[ingest]}" \
  --count "$ROWS" --rate 3000 --batch 500

log "waiting for the trainer container to register v1 and serving to load it"
$RUN python - "$REGISTRY_URL" "http://127.0.0.1:${PORT[serving]}" "$deadline" <<'EOF'
import sys
import time

import httpx

from flywheel_fraud.simulator import FraudSimulator

registry, serving, deadline = sys.argv[1], sys.argv[2], float(sys.argv[3])
features = ["amount", "avg_amount_30d", "distance_from_home_km", "minutes_since_last_tx", "hour",
            "tx_count_24h", "account_age_days", "card_present", "foreign", "merchant_category"]
[row] = FraudSimulator(seed=99).batch(1)
record = {k: row[k] for k in ["transaction_id", *features]}
last = ""
while time.time() < deadline:
    try:
        model = httpx.get(f"{registry}/v1/models/fraud", timeout=5).json()
        aliases = model.get("aliases", {})
        if "production" in aliases:
            resp = httpx.post(f"{serving}/v1/models/fraud/predict",
                              json={"records": [record]}, timeout=10)
            if resp.status_code == 200:
                out = resp.json()
                print(f"smoke: registry: fraud production = v{aliases['production']['version']}; serving "
                      f"v{out['version']} answered score {out['predictions'][0]['score']:.4f}")
                sys.exit(0)
            last = f"serving HTTP {resp.status_code}: {resp.text[:200]}"
        else:
            last = f"no production alias yet (aliases {aliases})"
    except (httpx.HTTPError, ValueError) as exc:
        last = f"{type(exc).__name__}: {exc}"
    time.sleep(1)
sys.exit(f"smoke: ERROR: no served model before the deadline: {last}")
EOF

log "flywheel status: every service ready, lag and models"
$RUN flywheel status --bootstrap "$KAFKA" --topic-prefix "$PREFIX" \
  --ingest-url "http://127.0.0.1:${PORT[ingest]}" --registry-url "$REGISTRY_URL" \
  --trainer-url "http://127.0.0.1:${PORT[trainer]}" --serving-url "http://127.0.0.1:${PORT[serving]}" \
  --monitor-url "http://127.0.0.1:${PORT[monitor]}"
log "passed in $(( $(now) - T0 ))s"
