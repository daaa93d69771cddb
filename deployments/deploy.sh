#!/usr/bin/env bash
# Create the autoraysearch process work pool and every deployment declared in prefect.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
prefect work-pool inspect autoraysearch >/dev/null 2>&1 || prefect work-pool create autoraysearch --type process
prefect --no-prompt deploy --all
