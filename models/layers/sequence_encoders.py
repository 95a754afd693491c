"""Sequence encoders shared by several models: one output vector per history position.

Both encoders are causal: the output at position t depends on items 0..t only, so one
forward pass over a left-aligned, padded history gives the user vector after every
prefix (all-positions training) and the vector after the whole history (the output at
position `length - 1`).

* `CausalSelfAttentionEncoder`: SASRec's stack of causal self-attention blocks (Kang
  and McAuley, ICDM 2018, section III); DSS builds on it.
* `GRUEncoder`: GRU4Rec's recurrent encoder (Hidasi et al., ICLR 2016); HRNN-meta
  builds on it.
"""

import tensorflow as tf
import tf_keras

from models.layers import attention
from models.layers import embeddings

# LayerNorm epsilon of the SASRec reference code (1e-8 there; 1e-6 keeps float32 safe).
_LAYER_NORM_EPSILON = 1e-6


class CausalSelfAttentionBlock(tf_keras.layers.Layer):
  """One SASRec block (eq. 4-6 with section III-C's residual, LayerNorm and dropout).

      S = x + Dropout(SA(LN(x)))          SA: causal multi-head attention, eq. 4-5
      F = S + Dropout(FFN(LN(S)))         FFN = ReLU(S W1 + b1) W2 + b2, eq. 6

  "g(x) = x + Dropout(g(LayerNorm(x)))" is the paper's form; the authors' TF code
  normalizes only the attention queries, not its keys and values.
  """

  def __init__(self, dim: int, num_heads: int, dropout: float, **kwargs):
    super().__init__(**kwargs)
    if dim % num_heads:
      raise ValueError(f"dim {dim} must be a multiple of num_heads {num_heads}.")
    self.attention_norm = tf_keras.layers.LayerNormalization(epsilon=_LAYER_NORM_EPSILON,
                                                             name="attention_norm")
    self.attention = attention.MultiHeadSelfAttention(num_heads, dropout, name="attention")
    self.feed_forward_norm = tf_keras.layers.LayerNormalization(epsilon=_LAYER_NORM_EPSILON,
                                                                name="feed_forward_norm")
    self.hidden = tf_keras.layers.Dense(dim, activation="relu", name="hidden")  # W1, b1
    self.output_projection = tf_keras.layers.Dense(dim, name="output_projection")  # W2, b2
    self.dropout = tf_keras.layers.Dropout(dropout)

  def call(self, inputs, attention_mask, training=False):
    """`[batch, len, dim]` -> `[batch, len, dim]`; `attention_mask` `[batch, len, len]` bool."""
    attended = self.attention(self.attention_norm(inputs), attention_mask, training=training)
    hidden = inputs + self.dropout(attended, training=training)
    transformed = self.output_projection(self.hidden(self.feed_forward_norm(hidden)))
    return hidden + self.dropout(transformed, training=training)


class CausalSelfAttentionEncoder(tf_keras.layers.Layer):
  """SASRec's encoder: embedded items plus positions, `num_blocks` causal blocks, LayerNorm.

      E_t = M_{s_t} * sqrt(d) + P_t      (section III-B; the sqrt(d) scale is the
                                          reference code's, the paper is silent)
      F^(b) = Block(F^(b-1)), F^(0) = Dropout(E), padding rows zeroed before each block
      output = LN(F^(B))

  Positions count from the newest item (`RecencyPositionEmbedding`), which is what
  SASRec's right-aligned windows give: the newest item always has the same position.
  The item embeddings `M` are the model's item table (shared with the output layer,
  section III-E), passed in at call time.

  Attributes:
    dim, max_length, num_blocks, num_heads, dropout: as in `SASRecConfig`.
  """

  def __init__(self, dim: int, max_length: int, num_blocks: int, num_heads: int,
               dropout: float, **kwargs):
    super().__init__(**kwargs)
    self.dim = dim
    self.position_embedding = embeddings.RecencyPositionEmbedding(
        max_length, dim, name="position_embedding")
    self.input_dropout = tf_keras.layers.Dropout(dropout)
    self.blocks = [CausalSelfAttentionBlock(dim, num_heads, dropout, name=f"block_{b}")
                   for b in range(num_blocks)]
    self.output_norm = tf_keras.layers.LayerNormalization(epsilon=_LAYER_NORM_EPSILON,
                                                          name="output_norm")

  def call(self, item_vectors, mask, training=False):
    """Encodes embedded histories.

    Args:
      item_vectors: `[batch, len, dim]` item embeddings of a left-aligned history.
      mask: `[batch, len]` bool, True at real items.
      training: applies dropout.

    Returns:
      `[batch, len, dim]`: position t encodes items 0..t (rows past the history's
      end are padding).
    """
    real = tf.cast(mask, item_vectors.dtype)[:, :, tf.newaxis]
    sequence = item_vectors * (self.dim ** 0.5) + self.position_embedding(mask)
    sequence = self.input_dropout(sequence, training=training) * real
    length = tf.shape(mask)[1]
    causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)  # key <= query
    attention_mask = causal[tf.newaxis] & mask[:, tf.newaxis, :]
    for block in self.blocks:
      sequence = block(sequence, attention_mask, training=training) * real
    return self.output_norm(sequence)


class GRUEncoder(tf_keras.layers.Layer):
  """GRU4Rec's encoder as RecBole trains it: dropout(embeddings) -> GRU layers -> dense.

      h_t = GRU(h_{t-1}, Dropout(M_{s_t}))     (Hidasi et al. 2016, section 3.1, eq. 2-5)
      o_t = W h_t + b                          projects the hidden state back to the item
                                               embedding size, so scores are o_t . M_i

  The GRU is causal by construction; padded steps come after the history and never
  reach a real position's output.
  """

  def __init__(self, dim: int, hidden_dim: int, num_layers: int, dropout: float, **kwargs):
    super().__init__(**kwargs)
    self.dim = dim
    self.input_dropout = tf_keras.layers.Dropout(dropout)
    self.recurrent_layers = [
        tf_keras.layers.GRU(hidden_dim, return_sequences=True, name=f"gru_{i}")
        for i in range(num_layers)]
    self.projection = tf_keras.layers.Dense(dim, name="projection")

  def call(self, item_vectors, mask, training=False):
    """`[batch, len, dim]` embedded history -> `[batch, len, dim]` per-position outputs."""
    del mask  # causal: padding follows the history
    sequence = self.input_dropout(item_vectors, training=training)
    for layer in self.recurrent_layers:
      sequence = layer(sequence, training=training)
    return self.projection(sequence)
