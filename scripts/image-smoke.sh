#!/usr/bin/env bash
# Smoke-run the two built images as SageMaker runs them, on a machine with Docker (CI's images job).
# Usage: scripts/image-smoke.sh TRAIN_IMAGE SERVE_IMAGE
#
#   1. a tiny job directory in the SageMaker layout (what infra/local/jobs.py writes, with the data
#      copied in rather than linked: a symlink to the host would dangle inside the container);
#   2. `docker run TRAIN_IMAGE train` with it mounted at /opt/ml, no network, W&B offline; the model
#      artifact must appear in /opt/ml/model;
#   3. `docker run SERVE_IMAGE serve` with that model mounted read-only at /opt/ml/model; /ping must
#      answer 200 within 120 s and /invocations must classify one test PNG.
# The serving container is removed on every exit path. Env: SMOKE_PORT (host port, default 18080),
# MLOPS (the CLI that makes the data, default .venv/bin/mlops), DOCKER (default docker).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 TRAIN_IMAGE SERVE_IMAGE" >&2
  exit 2
fi
train_image=$1
serve_image=$2
docker=${DOCKER:-docker}
mlops=${MLOPS:-.venv/bin/mlops}
port=${SMOKE_PORT:-18080}
ping_timeout_s=120

work=$(mktemp -d)
job="$work/job"
container=""

cleanup() {
  local status=$?
  if [[ -n "$container" ]]; then
    if [[ $status -ne 0 ]]; then
      echo "--- serving container log" >&2
      "$docker" logs "$container" >&2 || true
    fi
    "$docker" rm -f "$container" > /dev/null 2>&1 || true
  fi
  # The training container ran as root (as on SageMaker): remove what it wrote from inside one.
  "$docker" run --rm --network none -v "$work:/smoke" --entrypoint rm "$train_image" -rf /smoke/job \
    > /dev/null 2>&1 || true
  rm -rf "$work" 2> /dev/null || echo "note: could not remove $work" >&2
  exit "$status"
}
trap cleanup EXIT

echo "== job directory $job"
mkdir -p "$job/input/config"
"$mlops" data synthetic --out "$job/input/data" --classes 3 \
  --train-per-class 20 --val-per-class 5 --test-per-class 5
# SageMaker writes every hyperparameter value as a string.
cat > "$job/input/config/hyperparameters.json" << 'EOF'
{"arch": "smallcnn", "epochs": "1", "batch_size": "32"}
EOF
cat > "$job/input/config/inputdataconfig.json" << 'EOF'
{"train": {"ContentType": "application/x-image", "TrainingInputMode": "File"},
 "validation": {"ContentType": "application/x-image", "TrainingInputMode": "File"},
 "test": {"ContentType": "application/x-image", "TrainingInputMode": "File"}}
EOF
cat > "$job/input/config/resourceconfig.json" << 'EOF'
{"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"}
EOF

echo "== train: $train_image"
"$docker" run --rm --network none -e WANDB_MODE=offline -v "$job:/opt/ml" "$train_image" train
if [[ ! -f "$job/model/manifest.json" ]]; then
  echo "FAIL: the training container wrote no $job/model/manifest.json" >&2
  ls -lR "$job/model" "$job/output" >&2 || true
  exit 1
fi
echo "model artifact: $(ls -m "$job/model")"

echo "== serve: $serve_image on 127.0.0.1:$port"
container=$("$docker" run -d -p "127.0.0.1:$port:8080" -v "$job/model:/opt/ml/model:ro" "$serve_image" serve)
url="http://127.0.0.1:$port"
deadline=$((SECONDS + ping_timeout_s))
until [[ "$(curl -s -o /dev/null -w '%{http_code}' "$url/ping" || true)" == 200 ]]; do
  if [[ "$("$docker" inspect -f '{{.State.Running}}' "$container" 2> /dev/null || echo false)" != true ]]; then
    echo "FAIL: the serving container stopped before answering /ping" >&2
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "FAIL: /ping did not answer 200 within ${ping_timeout_s}s" >&2
    exit 1
  fi
  sleep 1
done
echo "/ping: 200"

png=$(find "$job/input/data/test" -name '*.png' | sort | head -n 1)
answer=$(curl -sS --fail-with-body -X POST -H 'Content-Type: image/png' --data-binary "@$png" \
  "$url/invocations")
echo "/invocations: $answer"
python3 -c '
import json, sys
answer = json.loads(sys.argv[1])
predictions = answer.get("predictions") or []
assert len(predictions) == 1 and predictions[0]["top_k"], f"no prediction in {answer}"
print("top label:", predictions[0]["top_k"][0]["label"])
' "$answer"
echo "== smoke passed"
