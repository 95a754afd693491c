r"""RecBole's training speed on amazon_beauty (SINE, SASRec, GRU4Rec): the other side
of train_benchmark.py.

Runs only in its own virtualenv (never the project's .venv: RecBole needs PyTorch):

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0 "numpy>=2" recbole    # RecBole 1.2.1
    /tmp/recbole-venv/bin/python -W ignore benchmarks/recbole_benchmark.py --model=SASRec

`benchmarks/train_benchmark.py --recbole_python=/tmp/recbole-venv/bin/python` runs it
alternately with ours and prints the ratio.

Nothing in the project imports this file and it imports nothing from the project.

What it does (../shared/BENCHMARKS.md, "Running RecBole here"):
1. converts ../shared/data/amazon_beauty/Beauty.txt (S3-Rec format: one user per line,
   items in time order, no timestamps) to a RecBole atomic file
   `--work_dir`/amazon_beauty/amazon_beauty.inter with the position in the user's
   sequence as the timestamp, so RecBole keeps the order;
2. builds RecBole through recbole.config.Config, recbole.data.create_dataset /
   data_preparation and recbole.utils.get_model / get_trainer (recbole.quick_start
   imports ray, which breaks on numpy 2), after restoring the np.float_, np.complex_
   and np.unicode_ aliases numpy 2 removed;
3. the model (`--model`) at RecBole 1.2.1's defaults, written out in `MODEL_SETTINGS`
   (SINE: embedding 64, 50 prototypes, 3 interests, tau 0.1, covariance weight 0.5;
   SASRec: hidden 64, 2 layers, 2 heads, feed-forward 256 with GELU, dropout 0.5;
   GRU4Rec: embedding 64, 1 GRU layer of 128 units, dropout 0.3), CE loss over all
   12,101 items (no negative sampling), Adam 1e-3, batch 256, MAX_ITEM_LIST_LENGTH 50,
   leave-last-one-out ordered by time: the training set is every prefix of each user's
   training part (131,413 prefixes), one sample each;
4. times `--epochs` calls of the trainer's `_train_epoch` (data loading included, as
   the TensorFlow side includes its input pipeline) and prints prefixes per second per
   epoch, prefixes per CPU-second, peak RSS and the load average (and writes them to
   `--result_json`); `--max_batches` cuts each epoch short, for quick checks.

`--flush_denormal` (default on) calls torch.set_flush_denormal(True): without it
BENCHMARKS.md saw trained SINE slow down to a third. TensorFlow flushes denormals to
zero in its own threads by default, so the TensorFlow side needs no such switch.
Recorded figures: docs/benchmarks.md.
"""

import argparse
import json
import os
import resource
import tempfile
import time

import numpy as np

# numpy 2 removed these aliases; RecBole 1.2.1 still uses them.
for _alias, _type in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
  if not hasattr(np, _alias):
    setattr(np, _alias, _type)

import torch  # pylint: disable=g-import-not-at-top,wrong-import-position
from recbole.config import Config  # pylint: disable=g-import-not-at-top,wrong-import-position
from recbole.data import create_dataset  # pylint: disable=g-import-not-at-top,wrong-import-position
from recbole.data import data_preparation  # pylint: disable=g-import-not-at-top,wrong-import-position
from recbole.utils import get_model  # pylint: disable=g-import-not-at-top,wrong-import-position
from recbole.utils import get_trainer  # pylint: disable=g-import-not-at-top,wrong-import-position
from recbole.utils import init_seed  # pylint: disable=g-import-not-at-top,wrong-import-position

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "amazon_beauty"
# RecBole 1.2.1's defaults (recbole/properties/model/*.yaml), written out so that a
# RecBole upgrade cannot change the compared sizes unnoticed; EMBEDDING is set from
# --embedding_dim.
EMBEDDING = object()
MODEL_SETTINGS = {
    "SINE": {"embedding_size": EMBEDDING, "prototype_size": 50, "interest_size": 3,
             "tau_ratio": 0.1, "reg_loss_ratio": 0.5},
    "SASRec": {"hidden_size": EMBEDDING, "n_layers": 2, "n_heads": 2, "inner_size": 256,
               "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "hidden_act": "gelu"},
    "GRU4Rec": {"embedding_size": EMBEDDING, "hidden_size": 128, "num_layers": 1,
                "dropout_prob": 0.3},
}


def write_atomic_file(source_dir: str, work_dir: str) -> None:
  """Beauty.txt -> WORK_DIR/amazon_beauty/amazon_beauty.inter (position as the time)."""
  source = os.path.join(source_dir, "Beauty.txt")
  if not os.path.isfile(source):
    raise FileNotFoundError(f"{source!r} not found: pass --shared_dir (the folder holding "
                            f"data/amazon_beauty/) or set DCG_SHARED_DIR.")
  target_dir = os.path.join(work_dir, DATASET)
  target = os.path.join(target_dir, f"{DATASET}.inter")
  if os.path.exists(target):
    return
  os.makedirs(target_dir, exist_ok=True)
  with open(source) as f, open(target + ".tmp", "w") as out:
    out.write("user_id:token\titem_id:token\ttimestamp:float\n")
    for line in f:
      user, *items = line.split()
      out.writelines(f"{user}\t{item}\t{position}\n" for position, item in enumerate(items))
  os.replace(target + ".tmp", target)


class _EpochCut(Exception):
  """Raised inside an epoch to end it after --max_batches batches."""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--shared_dir", default=os.environ.get(
      "DCG_SHARED_DIR", os.path.join(os.path.dirname(_REPO_ROOT), "shared")),
                      help="Folder holding data/amazon_beauty/; default $DCG_SHARED_DIR or ../shared.")
  parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "recbole_benchmark"),
                      help="Atomic files and RecBole's outputs go here.")
  parser.add_argument("--model", default="SINE", choices=sorted(MODEL_SETTINGS),
                      help="RecBole model, at RecBole's default sizes.")
  parser.add_argument("--embedding_dim", type=int, default=64, help="d of every model.")
  parser.add_argument("--epochs", type=int, default=1, help="Training epochs to time.")
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--max_length", type=int, default=50)
  parser.add_argument("--flush_denormal", type=int, default=1, help="1: flush denormals to zero.")
  parser.add_argument("--threads", type=int, default=0,
                      help="torch intra-op threads; 0 keeps torch's default (one per core).")
  parser.add_argument("--log_every", type=int, default=100, help="Batches between progress lines.")
  parser.add_argument("--max_batches", type=int, default=0,
                      help="Stop each epoch after this many batches (0: whole epochs; for "
                      "quick checks of this script).")
  parser.add_argument("--result_json", default=None,
                      help="Also write the figures (over all timed epochs) here as JSON.")
  args = parser.parse_args()
  args.work_dir = os.path.abspath(args.work_dir)

  write_atomic_file(os.path.join(args.shared_dir, "data", DATASET), args.work_dir)
  # RecBole writes log/ and log_tensorboard/ into the working directory: keep them out
  # of the repository.
  os.chdir(args.work_dir)
  torch.set_flush_denormal(bool(args.flush_denormal))
  if args.threads:
    torch.set_num_threads(args.threads)
  settings = {key: args.embedding_dim if value is EMBEDDING else value
              for key, value in MODEL_SETTINGS[args.model].items()}
  config = Config(model=args.model, dataset=DATASET, config_dict={
      **settings,
      "data_path": args.work_dir, "checkpoint_dir": os.path.join(args.work_dir, "saved"),
      "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
      "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
      "MAX_ITEM_LIST_LENGTH": args.max_length, "train_batch_size": args.batch_size,
      "loss_type": "CE", "train_neg_sample_args": None,
      "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user",
                    "mode": "full"},
      "use_gpu": False, "show_progress": False, "epochs": args.epochs, "state": "WARNING",
  })
  init_seed(config["seed"], config["reproducibility"])
  dataset = create_dataset(config)
  train_data, _, _ = data_preparation(config, dataset)
  model = get_model(config["model"])(config, train_data._dataset).to(config["device"])  # pylint: disable=protected-access
  trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
  prefixes = train_data.sample_size
  print(f"RecBole {args.model}: {dataset.item_num - 1} items, {prefixes} training prefixes, "
        f"batch {args.batch_size}, max length {args.max_length}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, flush denormals {bool(args.flush_denormal)}, "
        f"load {os.getloadavg()[0]:.2f}", flush=True)
  load_before = os.getloadavg()[0]
  epochs = []
  for epoch in range(args.epochs):
    wall, cpu = time.perf_counter(), time.process_time()
    batches = 0

    def loss_with_progress(interaction):
      nonlocal batches
      if args.max_batches and batches == args.max_batches:
        raise _EpochCut()
      batches += 1
      if batches % args.log_every == 0:
        seconds = time.perf_counter() - wall
        print(f"  epoch {epoch} batch {batches}/{len(train_data)}: "
              f"{batches * args.batch_size / seconds:,.0f} prefixes/s so far, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
      return model.calculate_loss(interaction)

    try:
      loss = trainer._train_epoch(train_data, epoch, loss_func=loss_with_progress)  # pylint: disable=protected-access
      loss = loss if isinstance(loss, float) else float(sum(loss))
      trained = prefixes
    except _EpochCut:
      loss, trained = float("nan"), batches * args.batch_size
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    epochs.append({"prefixes": trained, "batches": batches, "wall_seconds": wall,
                   "cpu_seconds": cpu, "loss": loss})
    print(f"epoch {epoch}: {batches} batches, {wall:.1f} s, {trained / wall:,.0f} prefixes/s, "
          f"{trained / cpu:,.0f} prefixes/CPU-s, {1000 * wall / batches:.1f} ms/step, "
          f"loss {loss:.1f}, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)

  if args.result_json:
    wall, cpu, trained, batches = (sum(e[key] for e in epochs) for key in (
        "wall_seconds", "cpu_seconds", "prefixes", "batches"))
    result = {
        "system": "recbole", "model": args.model, "settings": settings,
        "num_items": dataset.item_num - 1, "epoch_prefixes": prefixes, "prefixes": trained,
        "epochs": epochs, "batch_size": args.batch_size, "max_length": args.max_length,
        "threads": torch.get_num_threads(), "flush_denormal": bool(args.flush_denormal),
        "wall_seconds": wall, "cpu_seconds": cpu, "prefixes_per_second": trained / wall,
        "prefixes_per_cpu_second": trained / cpu, "ms_per_step": 1000 * wall / batches,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "torch": torch.__version__,
    }
    with open(args.result_json, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
