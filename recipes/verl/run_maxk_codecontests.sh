#!/usr/bin/env bash
# max@k RL of Qwen2.5-Coder-7B-Instruct with verl, the paper's setting (recipes/verl/config/maxk_codecontests.yaml).
# Needs GPUs (vLLM rollout, FSDP actor), `pip install "maxk[verl]"` plus verl's own GPU requirements.
#
#   TASKS=codecontests_train.jsonl TEST_TASKS=codecontests_test.jsonl bash recipes/verl/run_maxk_codecontests.sh \
#       [hydra overrides, e.g. algorithm.adv_estimator=maxk_loo1 algorithm.maxk.k=2 trainer.n_gpus_per_node=4]
#
# TASKS: maxk task JSONL (docs/rewards.md). TEST_TASKS optional (else 10% of TASKS is held out).
# DATA_DIR: where the parquet files go (default ~/data/maxk).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${TASKS:?set TASKS=path/to/tasks.jsonl}"
DATA_DIR="${DATA_DIR:-$HOME/data/maxk}"

prep=(--tasks "$TASKS" --out "$DATA_DIR")
[[ -n "${TEST_TASKS:-}" ]] && prep+=(--test-tasks "$TEST_TASKS")
python "$HERE/prepare_data.py" "${prep[@]}"

# The maxk estimators are registered in verl by the `verl.plugins` entry point of the maxk package;
# naming the module here as well keeps it working where entry points are not scanned.
export VERL_USE_EXTERNAL_MODULES="${VERL_USE_EXTERNAL_MODULES:-maxk.integrations.verl}"

python -m verl.trainer.main_ppo \
    --config-path "$HERE/config" --config-name maxk_codecontests \
    data.train_files="$DATA_DIR/train.parquet" \
    data.val_files="$DATA_DIR/test.parquet" \
    "$@"
