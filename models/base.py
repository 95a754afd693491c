"""The contract between the models and the trainer, evaluator and export.

A model is a `tf_keras.Model` subclass registered in `models.registry`, built as
`ModelClass(config, num_items=...)` inside whatever strategy scope the trainer opens
(it never sees the strategy, flags or files). Its item table is one Keras variable of
`input_pipeline.schema.embedding_rows(num_items)` rows, so ParameterServerStrategy's
variable partitioner can shard it.

Inputs (`call(features, training)`): the dict a sample builder in
`input_pipeline.samples` makes, at least
    HISTORY         [batch, seq_len] int64 item indices, left-aligned, padded with pad_id
    HISTORY_LENGTH  [batch] int64 number of real items in HISTORY
    HISTORY_TIMESTAMPS [batch, seq_len] int64 (aligned with HISTORY)
plus whatever extra keys the model's own builder adds.

Outputs: a dict with
    QUERY          [batch, dim] or [batch, steps, dim]: the vector(s) scored against the
                   item table by the training loss, one per label in LABELS.
    USER_VECTORS   [batch, num_vectors, dim]: what serving retrieves with (one vector
                   for single-interest models; an item's score is its max over vectors).
    AUX_LOSSES     {name: tensor}: extra loss terms, already weighted by the paper's
                   coefficient; `[batch]` per-example terms are averaged over the global
                   batch by the trainer, scalars are regularizers scaled per replica.
"""

import tensorflow as tf
import tf_keras

from input_pipeline import schema

HISTORY = "history"
HISTORY_LENGTH = "history_length"
HISTORY_TIMESTAMPS = "history_timestamps"
LABELS = "labels"  # [batch, steps] int64, padded with pad_id; the loss skips padding
QUERY = "query"
USER_VECTORS = "user_vectors"
AUX_LOSSES = "aux_losses"


class RetrievalModel(tf_keras.Model):
  """Base class: subclasses set `num_items` and the item embedding layer `item_embedding`."""

  @property
  def item_table(self):
    """The item embedding variable `[embedding_rows(num_items), dim]` (maybe sharded)."""
    return self.item_embedding.embeddings

  def create_variables(self, max_length: int) -> None:
    """Creates every variable with one call on a one-item history.

    Called right after construction: inside the trainer's strategy scope (so the
    strategy places and shards them) and before a checkpoint restore (so the restore is
    immediate and can be checked for unmatched variables).
    """
    history = tf.fill([1, max_length], tf.constant(schema.pad_id(self.num_items), tf.int64))
    history = tf.tensor_scatter_nd_update(history, [[0, 0]], tf.constant([0], tf.int64))
    self({HISTORY: history, HISTORY_LENGTH: tf.constant([1], tf.int64),
          HISTORY_TIMESTAMPS: tf.zeros_like(history)}, training=False)
