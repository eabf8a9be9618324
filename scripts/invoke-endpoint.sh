#!/usr/bin/env bash
# Send one held-out test image to the local endpoint with curl, as any HTTP client would.
# Usage: scripts/invoke-endpoint.sh [IMAGE] [URL]   (defaults: a synthetic test image, :8080)
set -euo pipefail
home="${MLOPS_HOME:-.mlops}"
image="${1:-$(find "$home/data/synthetic/test" -name '*.png' 2>/dev/null | sort | head -n 1)}"
url="${2:-http://127.0.0.1:${MLOPS_ENDPOINT_PORT:-8080}}"
if [[ -z "$image" || ! -f "$image" ]]; then
  echo "no image given and none found under $home/data/synthetic/test; run 'make demo' first" >&2
  exit 2
fi
echo "POST $image -> $url/invocations" >&2
curl -sS --fail-with-body -X POST -H 'Content-Type: image/png' --data-binary "@$image" "$url/invocations"
echo
