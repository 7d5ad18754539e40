#!/usr/bin/env bash
# Create (or update) domain-distiller's work pools and concurrency limits on a running Prefect server.
# Run it once per server, before `prefect deploy --all`; running it again changes nothing but the values
# it sets.
#
#   PREFECT_API_URL=http://127.0.0.1:4200/api bash deployments/setup.sh
#
# Settings (environment):
#   DISTILL_LLM_LIMIT   task runs tagged `llm` (LLM stages) running at once, all runs and workers [4]
#   DISTILL_GPU_RUNS    flow runs at once on each GPU pool: one training per GPU              [1]
set -euo pipefail
cd "$(dirname "$0")/.."

PREFECT=${PREFECT:-prefect}
LLM_LIMIT=${DISTILL_LLM_LIMIT:-4}
GPU_RUNS=${DISTILL_GPU_RUNS:-1}

# Without a server URL the CLI would quietly start a throwaway local server and configure that.
if [ -z "${PREFECT_API_URL:-}" ] && ! "$PREFECT" config view 2>/dev/null | grep -q "^PREFECT_API_URL="; then
  echo "setup.sh: set PREFECT_API_URL to the server, e.g. http://127.0.0.1:4200/api" >&2
  exit 2
fi

pool() { # name type template
  "$PREFECT" --no-prompt work-pool create "$1" --type "$2" \
    --base-job-template "deployments/pools/$3.json" --overwrite >/dev/null
  echo "work pool $1 ($2)"
}

pool distill-cpu process process                       # the default: flows run as processes
pool distill-gpu process process                       # a process worker on a GPU machine: training
pool distill-docker docker docker                      # a container per flow run (prefect-docker)
pool distill-kubernetes kubernetes kubernetes          # a Job per flow run (prefect-kubernetes)
pool distill-kubernetes-gpu kubernetes kubernetes-gpu  # a Job with an nvidia.com/gpu limit

for gpu_pool in distill-gpu distill-kubernetes-gpu; do
  "$PREFECT" --no-prompt work-pool set-concurrency-limit "$gpu_pool" "$GPU_RUNS" >/dev/null
done
echo "GPU pools: $GPU_RUNS flow run(s) at once"

# The LLM stages carry the tag `llm`: this caps how many run at once across every run and worker
# (each one sends at most teacher.max_concurrency requests at a time).
"$PREFECT" --no-prompt concurrency-limit create llm "$LLM_LIMIT" >/dev/null
echo "concurrency limit: tag llm = $LLM_LIMIT"
