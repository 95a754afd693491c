#!/usr/bin/env bash
# Trains SINE on the built-in synthetic data set, evaluates it, exports a SavedModel,
# builds the ScaNN top-k artifact and queries it for one test user. Creates .venv and
# installs the project on first use. Extra arguments go to the trainer, e.g.
#   ./quickstart.sh --train_steps=2000
source "$(dirname "${BASH_SOURCE[0]}")/tools/bootstrap.sh"
MODEL_DIR=runs/quickstart
DATA_DIR=runs/data/synthetic  # where trainer.main prepares the built-in data set
python -m trainer.main --model=sine --model_dir="$MODEL_DIR" "$@"
python -m retrieval.index_main --export_dir="$MODEL_DIR/export" --output_dir="$MODEL_DIR/retrieval"
echo "Retrieval artifact: $MODEL_DIR/retrieval/artifact"
python -m retrieval.serve --artifact_dir="$MODEL_DIR/retrieval/artifact" --data_dir="$DATA_DIR"
