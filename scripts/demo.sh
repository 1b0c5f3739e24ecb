#!/usr/bin/env bash
# `make demo`: the whole foundation on the embedded defaults (SQLite + a local artifact folder).
# Starts the control plane, registers the built-in datasets, trains the seed CNN and RNN as
# tracked jobs, shows their test metrics, predicts held-out examples, and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${LOOPML_PY:-.venv/bin/python}"
BIN="$(dirname "$PY")"
export PATH="$BIN:$PATH"
export LOOPML_HOME="${LOOPML_HOME:-$PWD/.loopml}"
if [ -z "${LOOPML_PORT:-}" ]; then  # 8080 unless it is taken
  LOOPML_PORT=$("$PY" -c 'import socket; s=socket.socket()
try: s.bind(("127.0.0.1", 8080)); print(8080)
except OSError: s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
export LOOPML_PORT
if [ -z "${LOOPML_SERVING_PORT:-}" ]; then  # the data plane: 8081 unless it is taken
  LOOPML_SERVING_PORT=$("$PY" -c 'import socket; s=socket.socket()
try: s.bind(("127.0.0.1", 8081)); print(8081)
except OSError: s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
export LOOPML_SERVING_PORT
DATA_URL="http://127.0.0.1:${LOOPML_SERVING_PORT}"
export LOOPML_API_URL="http://127.0.0.1:${LOOPML_PORT}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Control plane on ${LOOPML_API_URL} (home: ${LOOPML_HOME})"
mkdir -p "$LOOPML_HOME"
loopml server --port "$LOOPML_PORT" > "$LOOPML_HOME/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -fsS "$LOOPML_API_URL/health" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { cat "$LOOPML_HOME/server.log"; exit 1; }
  sleep 0.5
done
curl -fsS "$LOOPML_API_URL/health"; echo
echo "Dashboard: ${LOOPML_API_URL}/ui/  (live jobs, datasets, models, endpoints; open it while the demo runs)"

step "Built-in datasets (shipped inside Python packages: no download)"
for ds in mnist bbc-news digits penguins; do loopml datasets add "$ds" "sample:$ds"; done
loopml datasets list

step "Train the seed CNN on mnist (tracked job, live progress)"
loopml train --dataset mnist --model cnn --epochs 10 --wait

step "Train the seed RNN on bbc-news (vocabulary 10k, length 200, padding masked)"
loopml train --dataset bbc-news --model rnn --epochs 15 --wait

step "Registered model versions"
loopml models list

step "Batch prediction: 10 held-out MNIST images"
loopml predict mnist-cnn mnist:test --limit 10

step "Batch prediction: 5 held-out BBC articles"
loopml predict bbc-news-rnn bbc-news:test --limit 5

step "Deploy the CNN as real-time endpoint 'mnist' (follows alias production; 100 % capture)"
VERSION=$("$PY" -c 'from loopml.sdk.client import Client; print(Client().model_version("mnist-cnn")["version"])')
loopml models alias set mnist-cnn production "$VERSION"
loopml endpoints delete mnist >/dev/null 2>&1 || true  # a re-run replaces the previous one
loopml endpoints create mnist --model mnist-cnn@production --capture 100 --wait
loopml endpoints list

step "Real requests to ${DATA_URL}: HTTP JSON, boto3 sagemaker-runtime, binary npy"
"$PY" scripts/demo_invoke.py "$DATA_URL" "$LOOPML_HOME/mnist-request.json"
echo "curl -X POST -H 'Content-Type: application/json' --data-binary @mnist-request.json $DATA_URL/endpoints/mnist/invocations"
curl -fsS -X POST -H 'Content-Type: application/json' --data-binary @"$LOOPML_HOME/mnist-request.json" \
  "$DATA_URL/endpoints/mnist/invocations" | "$PY" -c 'import json, sys
p = json.load(sys.stdin)["predictions"][0]
print("  label %s  confidence %.3f" % (p["label"], p["confidence"]))'

step "Automation: a function, a new-data trigger and the retraining workflow"
for old in "triggers delete mnist-new-data" "workflows delete retrain-mnist" "functions delete ingest-mnist"; do
  loopml $old >/dev/null 2>&1 || true  # a re-run replaces the previous ones
done
loopml functions create ingest-mnist --file examples/functions/ingest_new_data.py \
  --env DATASET=mnist --env WORKFLOW=retrain-mnist --timeout 600 \
  --permission datasets:write --permission workflows:retrain-mnist:start
loopml workflows create retrain-mnist --template retrain --dataset mnist --model cnn --endpoint mnist \
  --epochs 10 --min-improvement 0.002
loopml workflows show retrain-mnist | head -30
loopml triggers create mnist-new-data --objects incoming/mnist/ --suffix .zip --function ingest-mnist
loopml triggers list

step "New labelled images arrive → trigger → function (new dataset version) → retraining workflow → endpoint"
"$PY" scripts/demo_new_data.py 1000 "incoming/mnist/delivery-$(date +%Y%m%d%H%M%S).zip"
"$PY" scripts/demo_automation.py mnist-new-data mnist 1800
loopml triggers history mnist-new-data
loopml models alias history mnist-cnn
"$PY" scripts/demo_invoke.py "$DATA_URL" "$LOOPML_HOME/mnist-request.json"

step "Monitoring: a monitor on endpoint mnist, an alert trigger, retraining on labelled traffic"
for old in "triggers delete mnist-drift" "workflows delete retrain-on-drift" "monitors delete mnist-mon"; do
  loopml $old >/dev/null 2>&1 || true
done
loopml monitors create mnist-mon --endpoint mnist --window 1h --min-samples 150
loopml workflows create retrain-on-drift --template retrain --dataset mnist-live --model cnn --endpoint mnist \
  --monitor mnist-mon --min-labels 500 --epochs 10 --min-improvement 0.02
loopml triggers create mnist-drift --alert mnist-mon --workflow retrain-on-drift

step "The closed loop: clean traffic → shift → alert → labels → retraining → clean again"
"$PY" scripts/demo_monitoring.py "$DATA_URL" mnist-mon mnist mnist-drift "$LOOPML_HOME"
loopml alerts list
loopml monitors runs mnist-mon

step "Done. Stopping the control plane (and its serving process)."
