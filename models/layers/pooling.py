"""Pooling of padded item sets into one vector: masked mean and query attention.

Both give exactly zero for a set without any real element (a user without long-term
behaviors, without unclicked items), never NaN and never an average of padding rows.
"""

import tensorflow as tf

from models.layers import attention


def masked_mean(values, mask):
  """Mean of the real rows of each set.

  Args:
    values: `[batch, ..., n, dim]`.
    mask: `[batch, ..., n]` bool, True at real elements.

  Returns:
    `[batch, ..., dim]`; zero for a set without real elements.
  """
  weights = tf.cast(mask, values.dtype)
  total = tf.einsum("...n,...nd->...d", weights, values)
  count = tf.reduce_sum(weights, axis=-1, keepdims=True)
  return total / tf.maximum(count, 1.0)


def attention_pool(keys, query, mask, counts=None):
  """Dot-product attention of one query over one or several sets of the same keys.

      a_k = exp(<g_k, q>) / sum_{k' in set} exp(<g_k', q>),   z = sum_{k in set} a_k g_k

  With `counts`, a key stands for c_k equal elements of a multiset, and the softmax runs
  over the elements: a_k = c_k exp(<g_k, q>) / sum_{k'} c_k' exp(<g_k', q>).

  SDM's user attention over the short-term session and its per-feature attention over
  the long-term behaviors, with the user profile vector as the query.

  Args:
    keys: `[batch, n, dim]`.
    query: `[batch, dim]`.
    mask: `[batch, n]` (one set) or `[batch, sets, n]` (several sets over the same
      keys, e.g. one per side-feature field), True at the set's elements.
    counts: optional `[batch, n]`, how many elements each key stands for (>= 1 where
      `mask` is True).

  Returns:
    `(pooled, weights)`: pooled `[batch, dim]` or `[batch, sets, dim]`, zero for an
    empty set; weights shaped like `mask`, zero outside the set, summing to 1 over
    a non-empty set.
  """
  logits = tf.linalg.matvec(keys, query)  # [batch, n]
  if counts is not None:
    logits += tf.math.log(tf.maximum(tf.cast(counts, logits.dtype), 1.0))
  one_set = mask.shape.rank == 2
  if one_set:
    mask = mask[:, tf.newaxis, :]
  logits = tf.broadcast_to(logits[:, tf.newaxis, :], tf.shape(mask))
  # masked_softmax gives an empty set uniform weights over padding: zero them.
  weights = attention.masked_softmax(logits, mask) * tf.cast(mask, keys.dtype)
  pooled = tf.matmul(weights, keys)  # [batch, sets, dim]
  if one_set:
    return pooled[:, 0, :], weights[:, 0, :]
  return pooled, weights
