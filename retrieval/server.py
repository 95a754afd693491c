"""HTTP serving of a retrieval artifact in TensorFlow Serving's REST format (Starlette on Uvicorn).

`python -m retrieval.serve --artifact_dir=OUT --port=8501` runs `serve_forever`. NAME
is `--model_name` (default: the artifact's model name):

    POST /v1/models/NAME:predict             top-k items per user (format: retrieval/rest.py)
    POST /v1/models/NAME/versions/V:predict  the same, answered only by version V (404 otherwise)
    GET  /v1/models/NAME                     version status, as TF Serving's GetModelStatus
    GET  /v1/models/NAME/metadata            the signature's inputs and outputs, the manifest
    POST /v1/models/NAME:reload              {"version": V}: serve V and stay on it (rollback);
                                             {} or {"version": "latest"}: follow the newest
    GET  /healthz                            liveness: the process answers
    GET  /readyz                             readiness: a version is served (its model and number)

Errors are `{"error": "..."}` with a 4xx status for the client's mistakes (rest.py) and
500 for the server's; either way the server keeps serving.

Batching. Requests never wait for each other's parsing: the event loop parses and
checks them, then queues their users; `num_batch_threads` workers each take all the
queued requests (up to `max_batch_size` users) as one call of the artifact in a
thread, so concurrent requests share one matmul or ScaNN search instead of queuing
behind each other, and a lone request is not delayed to wait for company.

Versions. Given a base path (`OUTPUT_DIR` or `OUTPUT_DIR/artifact`, retrieval/versions.py),
the server serves the newest version and checks for a newer one every `poll_seconds`.
A new version is loaded and warmed up in a background thread while the current one
keeps answering; then one reference is swapped, so requests already batched finish on
the old version and none is dropped. A version that fails to load is reported in the
status and skipped; the current one stays. `:reload` with a version pins it (rollback);
without one the server follows the newest again.
"""

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import socket
import threading
from typing import Any, Deque, Dict, Iterator, List, Optional

from absl import logging
from starlette import applications
from starlette import requests as http_requests
from starlette import responses
from starlette import routing
import uvicorn

from common import names
from retrieval import requests
from retrieval import rest
from retrieval import searcher as searcher_lib
from retrieval import versions

# TF Serving's version states (GetModelStatus).
LOADING, AVAILABLE, END = "LOADING", "AVAILABLE", "END"
# Kubernetes probes (cluster/serving.yaml): liveness and readiness.
LIVENESS_PATH, READINESS_PATH = "/healthz", "/readyz"


@dataclasses.dataclass(frozen=True)
class ServerConfig:
  """Limits and settings of the HTTP server.

  Attributes:
    model_name: the NAME of the URLs; None: the artifact's model name.
    max_batch_size: most users per request and per call of the artifact.
    max_list_length: most entries of one user's list input (history, ...).
    max_body_bytes: largest request body.
    num_batch_threads: calls of the artifact that may run at once.
    poll_seconds: how often to look for a new version (0: never; `:reload` still works).
  """
  model_name: Optional[str] = None
  max_batch_size: int = 256
  max_list_length: int = 1000
  max_body_bytes: int = 4 << 20
  num_batch_threads: int = 2
  poll_seconds: float = 30.0

  def __post_init__(self):
    for name in ("max_batch_size", "max_list_length", "max_body_bytes", "num_batch_threads"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
    if self.poll_seconds < 0:
      raise ValueError(f"poll_seconds must be >= 0 (0: never poll), got {self.poll_seconds}.")


class ModelManager:
  """The version being served, and the loading of others (thread-safe).

  Attributes:
    current: the `Searcher` answering requests; replaced in one assignment.
    pinned: the version to stay on, or None to follow the newest.
  """

  def __init__(self, artifact_dir: str):
    """Args: artifact_dir: a base path (versions are followed) or one SavedModel."""
    self.artifact_dir = artifact_dir
    self.base = versions.base_of(artifact_dir)
    self.current: Optional[searcher_lib.Searcher] = None
    self.pinned: Optional[int] = None
    self._status: Dict[int, tuple] = {}  # version -> (state, error message)
    self._lock = threading.Lock()

  def available(self) -> List[int]:
    return versions.list_versions(self.base) if self.base else []

  def sync(self, retry_failed: bool = False) -> None:
    """Loads and switches to the version that should be served, if it is not yet.

    Blocking (seconds for a large index): call it from a thread. The first load raises
    what went wrong; later failures are recorded in the status and the current version
    stays.
    """
    with self._lock:
      if self.base is None:
        if self.current is None:
          self._load(None)
        return
      wanted = self.pinned
      if wanted is None:
        candidates = [v for v in self.available()
                      if retry_failed or self._status.get(v, ("", ""))[1] == ""]
        wanted = candidates[-1] if candidates else None
      if wanted is None or (self.current is not None and self.current.version == wanted):
        return
      self._load(wanted)

  def _load(self, version: Optional[int]) -> None:
    if version is not None:
      self._status[version] = (LOADING, "")
    try:
      loaded = searcher_lib.Searcher(self.base or self.artifact_dir, version)
      loaded.warm_up()
    except Exception as e:  # pylint: disable=broad-except  (a bad version must not stop serving)
      if self.current is None:
        raise
      self._status[version] = (END, f"{type(e).__name__}: {e}"[:1000])
      logging.error("Version %s failed to load; still serving version %d: %s", version,
                    self.current.version, e)
      return
    previous, self.current = self.current, loaded
    self._status[loaded.version] = (AVAILABLE, "")
    if previous is not None:
      self._status[previous.version] = (END, "")
      logging.info("Switched from version %d to version %d (%s).", previous.version,
                   loaded.version, loaded.path)

  def pin(self, version: Optional[int]) -> None:
    """Serves `version` from now on (None: the newest); blocking, like `sync`.

    Raises:
      rest.RequestError: no versions here, or no such version, or it failed to load.
    """
    if self.base is None:
      raise rest.RequestError(f"This server serves the single SavedModel {self.artifact_dir!r}, "
                              f"not a base path with numbered versions; nothing to switch to.")
    if version is not None and version not in self.available():
      raise rest.RequestError(f"No version {version} under {self.base}; available: "
                              f"{self.available()}.", status=404)
    previous, self.pinned = self.pinned, version
    self.sync(retry_failed=True)
    if version is not None and self.current.version != version:
      self.pinned = previous
      raise rest.RequestError(f"Version {version} failed to load ({self._status[version][1]}); "
                              f"still serving version {self.current.version}.", status=500)

  def status(self) -> Dict[str, Any]:
    """TF Serving's GetModelStatus JSON, plus the version policy.

    Never waits for a load in progress (which holds the lock for seconds): it reads a
    copy of the states, so a version being loaded shows as LOADING.
    """
    entries = sorted(dict(self._status).items(), reverse=True)
    return {
        "model_version_status": [
            {"version": str(version), "state": state,
             "status": {"error_code": "UNKNOWN" if error else "OK", "error_message": error}}
            for version, (state, error) in entries],
        "policy": {"pinned": self.pinned, "available": self.available(),
                   "base_path": self.base},
    }


@dataclasses.dataclass
class _Pending:
  users: List[requests.UserRequest]
  version: Optional[int]  # only this version may answer (None: any)
  future: asyncio.Future


class Batcher:
  """Runs queued requests as batched calls of the current version (see module doc)."""

  def __init__(self, manager: ModelManager, max_batch_size: int, num_threads: int):
    self._manager = manager
    self._max = max_batch_size
    self._pending: Deque[_Pending] = collections.deque()
    self._wakeup = asyncio.Event()
    self._executor = concurrent.futures.ThreadPoolExecutor(num_threads,
                                                           thread_name_prefix="batch")
    self._workers = [asyncio.create_task(self._work()) for _ in range(num_threads)]

  async def predict(self, users: List[requests.UserRequest],
                    version: Optional[int] = None) -> Dict[str, Any]:
    """The artifact's outputs for these users (rows in order)."""
    future = asyncio.get_running_loop().create_future()
    self._pending.append(_Pending(users, version, future))
    self._wakeup.set()
    return await future

  async def _work(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      while not self._pending:
        self._wakeup.clear()
        await self._wakeup.wait()
      batch, size = [], 0
      while self._pending and (not batch or size + len(self._pending[0].users) <= self._max):
        batch.append(self._pending.popleft())
        size += len(batch[-1].users)
      searcher = self._manager.current  # the version this batch runs on, to its end
      wrong = [p for p in batch if p.version is not None and p.version != searcher.version]
      for pending in wrong:
        _settle(pending.future, error=rest.RequestError(
            f"Version {pending.version} is not the one served (version {searcher.version}); "
            f"use /v1/models/NAME:predict, or :reload it first.", status=404))
      batch = [p for p in batch if p not in wrong]
      if not batch:
        continue
      users = [user for pending in batch for user in pending.users]
      try:
        outputs = await loop.run_in_executor(self._executor, searcher.predict, users)
      except Exception as e:  # pylint: disable=broad-except  (answered as a 500)
        for pending in batch:
          _settle(pending.future, error=e)
        continue
      start = 0
      for pending in batch:
        rows = slice(start, start + len(pending.users))
        _settle(pending.future, {name: value[rows] for name, value in outputs.items()})
        start = rows.stop

  def close(self) -> None:
    for worker in self._workers:
      worker.cancel()
    self._executor.shutdown(wait=False)


def _settle(future: asyncio.Future, result=None, error: Optional[BaseException] = None) -> None:
  if future.done():  # the client went away
    return
  if error is not None:
    future.set_exception(error)
  else:
    future.set_result(result)


def _error(message: str, status: int) -> responses.JSONResponse:
  return responses.JSONResponse({"error": message}, status_code=status)


async def _read_body(request: http_requests.Request, limit: int) -> bytes:
  too_large = rest.RequestError(f"The body exceeds {limit} bytes (the server's --max_body_bytes); "
                                f"send fewer users per request.", status=413)
  declared = request.headers.get("content-length", "")
  if declared.isdigit() and int(declared) > limit:
    raise too_large
  body = bytearray()
  async for chunk in request.stream():
    body += chunk
    if len(body) > limit:
      raise too_large
  return bytes(body)


def _signature_json(specs) -> Dict[str, Any]:
  return {name: {"dtype": f"DT_{spec.dtype.name.upper()}",
                 "tensor_shape": {"dim": [{"size": str(-1 if d is None else d)}
                                          for d in spec.shape.as_list()]}}
          for name, spec in sorted(specs.items())}


def model_name(manager: ModelManager, config: ServerConfig) -> str:
  """The NAME in the URLs: `config.model_name`, else the artifact's model."""
  return config.model_name or manager.current.meta.get("model") or "model"


def create_app(manager: ModelManager, config: ServerConfig) -> applications.Starlette:
  """The Starlette app serving `manager`'s model (which must have a version loaded)."""
  name = model_name(manager, config)
  state = {}

  def check_name(request: http_requests.Request) -> None:
    asked = request.path_params["name"]
    if asked != name:
      raise rest.RequestError(f"Servable not found: this server serves the model {name!r}, not "
                              f"{asked!r}; POST to /v1/models/{name}:predict.", status=404)

  def answers_errors(handler):
    async def wrapped(request: http_requests.Request):
      try:
        return await handler(request)
      except rest.RequestError as e:
        return _error(str(e), e.status)
      except Exception as e:  # pylint: disable=broad-except  (the server keeps serving)
        logging.exception("Internal error on %s", request.url.path)
        return _error(f"Internal error: {type(e).__name__}: {e}", 500)
    return wrapped

  @answers_errors
  async def predict(request):
    check_name(request)
    version = request.path_params.get("version")
    body = await _read_body(request, config.max_body_bytes)
    users, row_format = rest.parse_predict(body, manager.current.inputs, config.max_batch_size,
                                           config.max_list_length)
    outputs = await state["batcher"].predict(users, None if version is None else int(version))
    return responses.JSONResponse(rest.format_predictions(outputs, row_format))

  @answers_errors
  async def model_status(request):
    check_name(request)
    # In a thread: it lists the base path, which may be on an object store.
    status = await asyncio.get_running_loop().run_in_executor(None, manager.status)
    return responses.JSONResponse(status)

  @answers_errors
  async def metadata(request):
    check_name(request)
    current = manager.current
    return responses.JSONResponse({
        "model_spec": {"name": name, "signature_name": "", "version": str(current.version)},
        "metadata": {"signature_def": {"signature_def": {names.SERVING_SIGNATURE: {
            "inputs": _signature_json(current.input_specs),
            "outputs": _signature_json(current.output_specs),
            "method_name": "tensorflow/serving/predict"}}}},
        "manifest": current.meta,
    })

  @answers_errors
  async def reload(request):
    check_name(request)
    version = rest.parse_reload(await _read_body(request, config.max_body_bytes))
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, manager.pin, version)
    return responses.JSONResponse(await loop.run_in_executor(None, manager.status))

  async def healthz(request):
    del request
    return responses.JSONResponse({"status": "alive"})

  async def readyz(request):
    del request
    current = manager.current
    if current is None:
      return _error("No version loaded yet.", 503)
    return responses.JSONResponse({"status": "ready", "model": name, "version": current.version})

  async def poll():
    loop = asyncio.get_running_loop()
    while True:
      await asyncio.sleep(config.poll_seconds)
      try:
        await loop.run_in_executor(None, manager.sync)
      except Exception:  # pylint: disable=broad-except  (keep polling: the base may come back)
        logging.exception("Looking for new versions under %s failed", manager.base)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    del app
    state["batcher"] = Batcher(manager, config.max_batch_size, config.num_batch_threads)
    poller = asyncio.create_task(poll()) if config.poll_seconds and manager.base else None
    try:
      yield
    finally:
      if poller:
        poller.cancel()
      state["batcher"].close()

  return applications.Starlette(routes=[
      routing.Route("/v1/models/{name}:predict", predict, methods=["POST"]),
      routing.Route("/v1/models/{name}/versions/{version:int}:predict", predict, methods=["POST"]),
      routing.Route("/v1/models/{name}:reload", reload, methods=["POST"]),
      routing.Route("/v1/models/{name}/metadata", metadata, methods=["GET"]),
      routing.Route("/v1/models/{name}", model_status, methods=["GET"]),
      routing.Route(LIVENESS_PATH, healthz, methods=["GET"]),
      routing.Route(READINESS_PATH, readyz, methods=["GET"]),
  ], lifespan=lifespan)


def _bind(host: str, port: int) -> socket.socket:
  # With the protocol named, asyncio sets TCP_NODELAY on accepted connections; without it
  # every small response waited ~40 ms for a delayed ACK (Nagle's algorithm).
  sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                       socket.IPPROTO_TCP)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
    # Listening now queues connections until Uvicorn accepts them, so the port may be
    # announced before the server loop runs.
    sock.listen(2048)
  except OSError as e:
    sock.close()
    raise ValueError(f"Cannot listen on {host}:{port} ({e.strerror}); choose another --port "
                     f"(0 picks a free one) or stop the process using it.") from e
  return sock


def _uvicorn(app) -> uvicorn.Server:
  # log_config=None keeps absl's logging; per-request access lines would cost more than
  # a small request takes.
  return uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                       lifespan="on", timeout_graceful_shutdown=30))


def serve_forever(manager: ModelManager, config: ServerConfig, host: str, port: int) -> None:
  """Serves until SIGINT/SIGTERM, then finishes the requests in flight (up to 30 s)."""
  sock = _bind(host, port)
  app = create_app(manager, config)
  bound_host, bound_port = sock.getsockname()[:2]
  name = model_name(manager, config)
  logging.info("Serving version %d of model %r (%s) at http://%s:%d/v1/models/%s:predict",
               manager.current.version, name, manager.current.path, bound_host, bound_port, name)
  _uvicorn(app).run(sockets=[sock])


@contextlib.contextmanager
def serve_in_thread(manager: ModelManager, config: ServerConfig,
                    host: str = "127.0.0.1") -> Iterator[str]:
  """Serves on a free port of `host` in a background thread; yields the base URL.

  For tests and the load test: the same app and server as `serve_forever`.
  """
  sock = _bind(host, 0)
  server = _uvicorn(create_app(manager, config))
  thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
  thread.start()
  try:
    while not server.started:
      if not thread.is_alive():
        raise RuntimeError("The HTTP server thread ended before it started serving.")
      thread.join(0.01)
    yield f"http://{host}:{sock.getsockname()[1]}"
  finally:
    server.should_exit = True
    thread.join()
    sock.close()
