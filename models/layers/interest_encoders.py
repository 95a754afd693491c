"""SDM's short-term and long-term interest encoders (Lv et al., CIKM 2019).

Notation of ../shared/papers/sdm-notes.md: the short-term session S_u (the latest
session's items), the long-term behaviors L_u split by feature type, the user profile
vector e_u.

    short-term  X = LSTM(S_u);  X^ = MultiHead(X);  a_k = softmax_k(<x^_k, e_u>);
                s_t = sum_k a_k x^_k
    long-term   z_f = sum_k softmax_k(<g^f_k, e_u>) g^f_k   for every feature type f
                p_u = tanh(W_p [z_1; ...; z_F] + b_p)

`GatedFusion` (models/layers/fusion.py) combines them into SDM's user vector. XDM
reuses both unchanged as its base sequential recommender (eq 1).
"""

import tensorflow as tf
import tf_keras

from models.layers import attention
from models.layers import pooling


class ShortTermEncoder(tf_keras.layers.Layer):
  """The short-term interest s_t: LSTM, multi-head self-attention, user attention.

  Choices where the paper is silent:
  - One LSTM layer of `dim` units over the embedded items, reading the session from
    the oldest item (padding after the session is masked, so it never changes the
    real steps).
  - The self-attention is `attention.MultiHeadSelfAttention` (query, key and value
    projections with biases, `dim / num_heads` per head, an output projection)
    attending from every real position to every real position of the session (not
    causal: the whole session is known at the request), without a residual
    connection or layer normalization (the paper has neither).
  - Dropout (default 0, the paper has none) on the LSTM outputs and on the attention
    weights.

  Attributes:
    dim: LSTM units and output size.
    num_heads: self-attention heads; `dim` must be a multiple.
    dropout: dropout rate (0 in the paper).
  """

  def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    if dim % num_heads:
      raise ValueError(f"ShortTermEncoder: dim {dim} must be a multiple of num_heads {num_heads}.")
    self.dim = dim
    self.lstm = tf_keras.layers.LSTM(dim, return_sequences=True, name="lstm")
    self.self_attention = attention.MultiHeadSelfAttention(
        num_heads, dropout=dropout, name="self_attention")
    self.dropout = tf_keras.layers.Dropout(dropout)

  def encode(self, items, mask, user_vector, training=False):
    """Every intermediate of the short-term encoder.

    Args:
      items: `[batch, len, input_dim]` embedded session items (left aligned).
      mask: `[batch, len]` bool, True at real items.
      user_vector: e_u `[batch, dim]`.
      training: applies dropout.

    Returns:
      dict: lstm `[batch, len, dim]` (X), attended `[batch, len, dim]` (X^),
      user_attention `[batch, len]` (a; zero at padding), interest `[batch, dim]` (s_t;
      zero for an empty session).
    """
    lstm = self.lstm(items, mask=mask, training=training)
    lstm = self.dropout(lstm, training=training)
    pair_mask = mask[:, :, tf.newaxis] & mask[:, tf.newaxis, :]
    attended = self.self_attention(lstm, pair_mask, training=training)
    interest, weights = pooling.attention_pool(attended, user_vector, mask)
    return {"lstm": lstm, "attended": attended, "user_attention": weights, "interest": interest}

  def call(self, items, mask, user_vector, training=False):
    """s_t `[batch, dim]` (see `encode`)."""
    return self.encode(items, mask, user_vector, training=training)["interest"]


class LongTermEncoder(tf_keras.layers.Layer):
  """The long-term interest p_u: attention pooling of each feature type's set, dense tanh.

  Every set is pooled with the user profile vector as the query
  (`pooling.attention_pool`; an empty set pools to zero), the pooled vectors are
  concatenated in a fixed order and projected: p_u = tanh(W_p [z_1; ...; z_F] + b_p).

  Attributes:
    dim: the size of p_u.
  """

  def __init__(self, dim: int, **kwargs):
    super().__init__(**kwargs)
    self.dim = dim
    self.projection = tf_keras.layers.Dense(dim, activation="tanh", name="projection")

  def encode(self, sets, user_vector):
    """Every intermediate of the long-term encoder.

    Args:
      sets: a sequence of `(keys [batch, n, dim], mask, counts)` with `mask` `[batch, n]`
        (one set) or `[batch, s, n]` (s sets over the same keys, e.g. one per field),
        and `counts` None or `[batch, n]` (each key stands for that many elements; see
        `pooling.attention_pool`).
      user_vector: e_u `[batch, dim]`.

    Returns:
      dict: pooled `[batch, num_sets, dim]` (z_f in order, flattened over the sets),
      weights (one attention tensor per entry of `sets`), interest `[batch, dim]` (p_u).
    """
    pooled, weights = [], []
    for keys, mask, counts in sets:
      vectors, attention = pooling.attention_pool(keys, user_vector, mask, counts)
      pooled.append(vectors if vectors.shape.rank == 3 else vectors[:, tf.newaxis, :])
      weights.append(attention)
    pooled = tf.concat(pooled, axis=1)
    flat = tf.reshape(pooled, [-1, pooled.shape[1] * pooled.shape[2]])
    return {"pooled": pooled, "weights": weights, "interest": self.projection(flat)}

  def call(self, sets, user_vector):
    """p_u `[batch, dim]` (see `encode`)."""
    return self.encode(sets, user_vector)["interest"]
