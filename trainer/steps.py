"""Step runners: run training steps on this machine's devices or on a cluster's workers.

`trainer.loop` calls a runner with a number of steps and gets back the step records
(loss terms and counts) summed over those steps, with `STEPS_TERM` the number of step
results that came back:

* `LocalSteps`: one device or MirroredStrategy; `log_every` steps per `tf.function`
  call on one device, a call per step with several replicas;
* `CoordinatedSteps`: ParameterServerStrategy; steps `schedule`d on the workers by a
  `ClusterCoordinator`, a few ahead of the results, waiting through worker failures.

Both end early on Ctrl-C or SIGTERM with the running steps finished
(`KeyboardInterrupt` after they return), so that the checkpoint the loop then writes
holds the step its name says.
"""

import collections
import contextlib
import os
import signal
import threading
import time
from typing import Any, Dict, Optional

from absl import logging
import tensorflow as tf

from trainer import strategy as strategy_lib

STEPS_TERM = "steps"  # step results summed (not summed over replicas: added by the runner)


def _sum_records(records) -> Dict[str, float]:
  """Sums step records (dicts of scalars) name by name."""
  sums: Dict[str, float] = {}
  for record in records:
    for name, value in record.items():
      sums[name] = sums.get(name, 0.0) + float(value)
  return sums


@contextlib.contextmanager
def _flag_on_interrupt(flag: tf.Variable):
  """Sets `flag` as soon as SIGINT or SIGTERM arrives, while the block runs.

  Python runs signal handlers in the main thread only between two of its
  instructions, so a `tf.function` running many steps delays the KeyboardInterrupt
  until it returns. The signal's C handler also writes to the wake-up pipe
  (`signal.set_wakeup_fd`) at once; a thread reading it sets `flag`, which the
  in-graph loop checks before each step. Only the main thread can install the pipe;
  elsewhere the block runs without it.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  interrupts = {signal.SIGINT, signal.SIGTERM}

  def watch():
    while data := os.read(read_fd, 64):  # b"" once the write end is closed
      if interrupts.intersection(data):
        flag.assign(True)

  watcher = threading.Thread(target=watch, name="interrupt-watcher", daemon=True)
  watcher.start()
  try:
    yield
  finally:
    signal.set_wakeup_fd(previous)
    os.close(write_fd)
    watcher.join()
    os.close(read_fd)


class LocalSteps:
  """Runs steps on this machine's devices: up to `n` steps per `tf.function` call.

  On one device the training input's iterator is attached to the run's checkpoint
  (`loop.INPUT_KEY`): every checkpoint holds the input's position, and a checkpoint
  restored by `TrainingRun` puts it back when the iterator is attached here
  (deferred restoration). A resumed run thus reads on from where the checkpoint was,
  with the input seeded by `seed` alone. MirroredStrategy's distributed iterator
  cannot be saved (TensorFlow 2.20: it is not trackable), and a checkpoint without
  the input's position (MirroredStrategy, parameter servers, older runs) is resumed
  with the input reseeded by the step, so that it does not replay the first batches.
  """

  def __init__(self, run, seed: Optional[int] = None):
    """`run`: a `trainer.loop.TrainingRun`; `seed`: the input's seed (None: the run's, as
    described above)."""
    keeps_position = run.strategy.num_replicas_in_sync == 1
    if seed is None:
      seed = run.config.schedule.seed
      if run.step and not (keeps_position and run.restored_input):
        seed += run.step
    iterator = iter(run.strategy.distribute_datasets_from_function(run.train_dataset_fn(seed)))
    if keeps_position:
      run.checkpoint.input = iterator
    with tf.device("/cpu:0"):  # a loop condition, read on the host
      self._interrupted = tf.Variable(False, trainable=False, name="interrupted")
    if run.strategy.num_replicas_in_sync > 1:
      # Collective all-reduces inside an in-graph loop can pair up across iterations
      # (RING collectives, used on CPUs and virtual GPUs, are not ordered), so with
      # several replicas every step is its own call (and an interrupt comes between).
      step = tf.function(run.distributed_step)
      self._run = lambda num_steps: {**_sum_records(step(iterator) for _ in range(num_steps)),
                                     STEPS_TERM: num_steps}
      return

    @tf.function
    def steps(num_steps):
      sums = run.distributed_step(iterator)
      sums[STEPS_TERM] = tf.constant(1.0)
      for _ in tf.range(num_steps - 1):
        if self._interrupted.read_value():
          break  # the KeyboardInterrupt follows as soon as this call returns
        terms = run.distributed_step(iterator)
        terms[STEPS_TERM] = tf.constant(1.0)
        sums = {name: sums[name] + terms[name] for name in sums}
      return sums

    self._run = lambda num_steps: _sum_records([steps(tf.constant(num_steps))])

  def __call__(self, num_steps: int) -> Dict[str, float]:
    self._interrupted.assign(False)
    with _flag_on_interrupt(self._interrupted):
      return self._run(num_steps)


class CoordinatedSteps:
  """Schedules steps on the parameter-server cluster's workers.

  At most `2 * num_workers` steps are scheduled ahead of the results (one running
  and one waiting per worker). An interrupt (KeyboardInterrupt) stops the
  scheduling and waits for the steps already scheduled, which would otherwise go on
  changing the variables while the checkpoint is written: the checkpoint then holds
  the step its name says. ClusterCoordinator runs a step again on another worker
  when its worker fails before returning, so the optimizer may apply more steps than
  come back (or, after a failure mid-update, part of one twice).
  """

  def __init__(self, run):
    """`run`: a `trainer.loop.TrainingRun` under ParameterServerStrategy."""
    self._coordinator = tf.distribute.coordinator.ClusterCoordinator(run.strategy)
    # Unseeded shuffles: every worker runs the same dataset_fn (input pipeline 0), so
    # only unseeded shuffling makes the workers read in different orders.
    dataset_fn = run.train_dataset_fn(seed=None)
    per_worker = self._coordinator.create_per_worker_dataset(
        lambda: run.strategy.distribute_datasets_from_function(dataset_fn))
    self._iterator = iter(per_worker)
    self._step = tf.function(run.distributed_step)
    self._ahead = 2 * strategy_lib.num_workers(run.strategy)

  def __call__(self, num_steps: int) -> Dict[str, float]:
    pending = collections.deque()
    records = []
    try:
      for _ in range(num_steps):
        if len(pending) >= self._ahead:
          records.append(_fetch(pending.popleft()))
        pending.append(self._coordinator.schedule(self._step, args=(self._iterator,)))
      records.extend(_fetch(result) for result in pending)
    except KeyboardInterrupt:
      self._coordinator.join()
      raise
    return {**_sum_records(records), STEPS_TERM: len(records)}


_REFETCH_S = 0.5


def _fetch(result) -> Dict[str, Any]:
  """A scheduled step's result; waits through the failure of the worker that ran it.

  A result is marked ready when its step is dispatched, before it is copied back: if
  the worker dies in between, `fetch` fails on the dead worker's handles while the
  coordinator runs the step again on another worker and fills the result in anew.
  """
  while True:
    try:
      return result.fetch()
    except (tf.errors.UnavailableError, tf.errors.AbortedError) as e:
      # ClusterCoordinator's rule for a worker failure (it never retries a ps failure).
      if "/job:worker" not in e.message or "remote target /job:ps" in e.message:
        raise
      logging.info("a step's worker failed before its result came back; waiting for the step "
                   "to run again on another worker")
      time.sleep(_REFETCH_S)
