"""The contract between a model and the trainer, evaluation, export and retrieval.

A model is a `RetrievalModel` subclass in its own file, registered by name in
`models.registry`, built as `ModelClass(config, data=data_spec)` inside whatever
strategy scope the trainer opens (it never sees flags, files or the strategy).
docs/models.md explains the contract on one page with a worked example.

What it declares:
    `sample_spec()`   the features it reads (`input_pipeline.samples.SampleSpec`: its
                      feature sets, each feature with its own padding, and how its
                      training samples are cut). Training, evaluation and serving build
                      them with the same code; the export's serving signature takes the
                      raw inputs they read.
    `candidates()`    the item side: the vectors every item is scored with, and an
                      optional per-item bias (default: the item embedding table, no
                      bias). Training, evaluation, export and the index job all score
                      `<user vector, item vector> + bias`.

What `call(features, training)` returns (a dict, keys in `common.names`):
    USER_VECTORS  [batch, num_vectors, dim]: what serving retrieves with; an item's
                  score is its best over the vectors. Always.
    HEADS         {name: Head}: the softmax heads of the training loss, when the
                  features hold the training labels. Each head's loss is its own term.
    AUX_LOSSES    {name: tensor}: extra loss terms, already weighted by the paper's
                  coefficient; `[batch]` per-example terms are averaged over the global
                  batch by the trainer, scalars are regularizers scaled per replica.
"""

from typing import NamedTuple, Optional

import tensorflow as tf
import tf_keras

from common import names
from input_pipeline import samples
from input_pipeline.data_spec import DataSpec


class Head(NamedTuple):
  """One softmax head of the training loss: query vectors scored against the candidates.

  Attributes:
    query: `[batch, dim]` (one vector for all of an example's labels),
      `[batch, steps, dim]` (one vector per label) or `[batch, steps, V, dim]` (V
      vectors per label, or per example with steps 1: the label scores by its best
      vector and the softmax normalizes over every (item, vector) pair, DSS eq 6).
    labels: `[batch, steps]` int64 item indices; padding (and OOV) labels are skipped.
    weights: `[batch, steps]` float32 per-label weights of the example's loss (the
      loss of an example is the weighted sum over its labels); None: the mean over the
      example's real labels.
  """
  query: tf.Tensor
  labels: tf.Tensor
  weights: Optional[tf.Tensor] = None


class Candidates(NamedTuple):
  """The item side: `score(user, item i) = <user vector, vectors[i]> + bias[i]`.

  Attributes:
    vectors: `[rows >= num_items, dim]`: a variable (maybe sharded by
      ParameterServerStrategy), or a tensor computed from item features. Only rows
      `[0, num_items)` are ever scored.
    bias: `[rows]` or None.
  """
  vectors: tf.Tensor
  bias: Optional[tf.Tensor] = None


def per_position_outputs(sequence, features, head: str = "next_item"):
  """The outputs of a causal per-position encoder (SASRec, GRU4Rec and their kin).

  Args:
    sequence: `[batch, len, dim]`: position t encodes the history up to item t.
    features: the batch (HISTORY_LENGTH; LABELS and LABEL_WEIGHTS in training).
    head: the name of the next-item head.

  Returns:
    USER_VECTORS `[batch, 1, dim]` (the newest position), and with LABELS in the
    features the head that scores every position against the item that follows it.
  """
  length = tf.maximum(tf.cast(features[names.HISTORY_LENGTH], tf.int32) - 1, 0)
  outputs = {names.USER_VECTORS: tf.gather(sequence, length, batch_dims=1)[:, tf.newaxis, :]}
  if names.LABELS in features:
    outputs[names.HEADS] = {head: Head(sequence, features[names.LABELS],
                                       features.get(names.LABEL_WEIGHTS))}
  return outputs


class RetrievalModel(tf_keras.Model):
  """Base class. Subclasses set `self.item_embedding` (an `ItemEmbedding`) in `__init__`,
  and implement `sample_spec` and `call`.

  Attributes:
    data: the `DataSpec` the model was built for.
    num_items: `data.num_items`.
  """

  def __init__(self, *, data: DataSpec, **kwargs):
    super().__init__(**kwargs)
    self.data = data
    self.num_items = data.num_items

  def sample_spec(self) -> samples.SampleSpec:
    """The features this model reads and how its training samples are cut."""
    raise NotImplementedError(f"{type(self).__name__} must implement sample_spec().")

  def candidates(self) -> Candidates:
    """The item vectors (and bias) every score uses; default: the item table, no bias."""
    return Candidates(self.item_embedding.embeddings)

  @property
  def item_table(self):
    """The item embedding variable `[embedding_rows(num_items), dim]` (maybe sharded)."""
    return self.item_embedding.embeddings

  def create_variables(self) -> None:
    """Creates every variable with one training call on a one-sample dummy batch.

    Called right after construction: inside the trainer's strategy scope (so the
    strategy places and shards the variables) and before a checkpoint restore (so the
    restore is immediate and can be checked for unmatched variables). The batch comes
    from `sample_spec()` (`SampleSpec.dummy_batch`), so it has the declared features.
    """
    self(self.sample_spec().dummy_batch(self.data), training=True)

  def user_vectors(self, features) -> tf.Tensor:
    """`[batch, num_vectors, dim]` user vectors of an inference batch."""
    return self(features, training=False)[names.USER_VECTORS]
