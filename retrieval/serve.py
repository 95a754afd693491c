r"""Serves a retrieval artifact over HTTP, or queries it for one user from the command line.

    python -m retrieval.serve --artifact_dir=OUT --port=8501 [--model_name=NAME]
    python -m retrieval.serve --artifact_dir=OUT --history=i3,i7,i1 [--top=10]
    python -m retrieval.serve --artifact_dir=OUT --data_dir=DIR [--user_index=0]

The first form starts the HTTP server of `retrieval/server.py` (TensorFlow Serving's REST
API: POST /v1/models/NAME:predict, GET /v1/models/NAME, /healthz, /readyz), serving the
newest version under OUT and switching to newer ones as they appear. The other two
print one user's top items: `--history` (timestamps one hour apart unless
--timestamps=t1,t2,...; --request_time, --user_features=age=25,gender=f for models
that read them), or test user `--user_index` of a prepared data set, whose held-out
items are marked. An empty or entirely unknown history gets the most popular items.

`--artifact_dir` is the index job's OUTPUT_DIR, its `artifact/` base path, or one
version's directory (served as is, never switched). The library behind both forms is
`retrieval/searcher.py` (`load_artifact` is re-exported here for scripts).
"""

from absl import app
from absl import flags

from common import cli  # before TensorFlow is imported: quiets its C++ start-up logs
from retrieval import requests
from retrieval import searcher as searcher_lib
from retrieval import server

load_artifact = searcher_lib.load_artifact


def test_user(data_dir: str, user_index: int = 0) -> requests.UserRequest:
  """One test user of a prepared data set (`requests.test_users`)."""
  if user_index < 0:
    raise ValueError(f"user_index must be >= 0, got {user_index}.")
  users = requests.test_users(data_dir, 1, first=user_index)
  if not users:
    raise ValueError(f"The test split of {data_dir!r} has no user number {user_index}.")
  return users[0]


def _print_one_user(args) -> None:
  if args.data_dir is not None:
    user = test_user(args.data_dir, args.user_index)
    print(f"Test user {user.user_id}: {len(user.history)} history items, last ones "
          f"{', '.join(user.history[-5:])}; held out: {', '.join(user.targets)}")
  else:
    user = requests.UserRequest.from_history(
        args.history, [int(t) for t in args.timestamps] if args.timestamps else None,
        user_features=args.user_features or (), request_time=args.request_time)
  searcher = load_artifact(args.artifact_dir)
  for rank, (item_id, score) in enumerate(searcher.query([user])[0][:args.top], start=1):
    mark = "\t<- held out" if item_id in user.targets else ""
    print(f"{rank}\t{item_id}\t{score:.6f}{mark}")


def _serve_http(args) -> None:
  config = server.ServerConfig(
      model_name=args.model_name, max_batch_size=args.max_batch_size,
      max_list_length=args.max_list_length, max_body_bytes=args.max_body_bytes,
      num_batch_threads=args.num_batch_threads, poll_seconds=args.poll_seconds)
  manager = server.ModelManager(args.artifact_dir)
  manager.sync()  # the first version loads before the port opens; errors end the program
  server.serve_forever(manager, config, args.host, args.port)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  if args.history is not None and args.data_dir is not None:
    raise app.UsageError("Give at most one of --history and --data_dir (neither: serve HTTP).")
  if args.history is not None or args.data_dir is not None:
    _print_one_user(args)
  else:
    _serve_http(args)


def run():
  # Defined here, not at import, so that importing the library defines no flags.
  defaults = server.ServerConfig()
  flags.DEFINE_string("artifact_dir", None, "The index job's OUTPUT_DIR, its artifact/ base "
                      "path (newest version, switching to newer ones) or one version.")
  flags.DEFINE_integer("port", 8501, "HTTP port (8501: TF Serving's REST port; 0: any free).")
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0 in a container).")
  flags.DEFINE_string("model_name", None, "NAME in /v1/models/NAME (default: the artifact's "
                      "model name).")
  flags.DEFINE_integer("max_batch_size", defaults.max_batch_size,
                       "Most users per request and per call of the artifact.")
  flags.DEFINE_integer("max_list_length", defaults.max_list_length,
                       "Most entries in one user's history (or other list input).")
  flags.DEFINE_integer("max_body_bytes", defaults.max_body_bytes, "Largest request body.")
  flags.DEFINE_integer("num_batch_threads", defaults.num_batch_threads,
                       "Calls of the artifact that may run at once.")
  flags.DEFINE_float("poll_seconds", defaults.poll_seconds,
                     "How often to look for a new artifact version (0: only on :reload).")
  flags.DEFINE_list("history", None, "Instead of serving: print the top items of this history "
                    "(raw item ids, oldest first).")
  flags.DEFINE_list("timestamps", None, "Unix seconds aligned with --history.")
  flags.DEFINE_integer("request_time", None, "Unix seconds of the request (models that read "
                       "it); default an hour after the last event.")
  flags.DEFINE_list("user_features", None, "Raw user feature names, e.g. age=25,gender=f "
                    "(models that read them).")
  flags.DEFINE_string("data_dir", None, "Instead of serving: print the top items of test user "
                      "--user_index of this prepared data set.")
  flags.DEFINE_integer("user_index", 0, "Which test user of --data_dir (file order).")
  flags.DEFINE_integer("top", 10, "Print only the first N of the k items.")
  flags.mark_flags_as_required(["artifact_dir"])
  cli.run(main)


if __name__ == "__main__":
  run()
