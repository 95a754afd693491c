"""DSS's intention-disentanglement layer (Ma et al., KDD 2020, section 3.3, eq 8-13).

Turns the per-position outputs `z` of a causal sequence encoder into K intention
vectors for every prefix at once: the output at position t summarizes items 0..t, as
the encoder's own outputs do, so one pass serves every training prefix.

    p_{k|i} = softmax_k(LN1(z_i) . LN2(c_k) / sqrt(D))                  eq 8
    key~_i  = LN3(alpha_i + z_i);  key_i = key~_i + ReLU(key~_i W + b)    eq 10-11
    query_t = LN4(alpha_t + z_t + b')                                   eq 12
    p_i(t)  = softmax_{i <= t}(key_i . query_t / sqrt(D))               eq 9
    phi_k(t) = LN5(beta_k + sum_{i <= t} p_{k|i} p_i(t) z_i)             eq 13

With `pooling="mean"` the sum of eq 13 is divided by intention k's share
w_k(t) = sum_{i <= t} p_{k|i} p_i(t) (a weighted mean of z). Why: LN5 discards the
pooled vector's length, so under eq 13 as written an intention with a small share
becomes LN5(beta_k + a short vector), close to the user-independent LN5(beta_k); the
mean keeps each intention about the items it holds, whatever its share. Measured in
docs/dss.md (it learns about twice as fast with K = 4 and a softmax over the catalog).

Choices where the paper is silent:
- alpha are position embeddings counted from the newest item of the sequence (as the
  encoder's), so the query of the newest position always carries alpha_0; the paper
  indexes alpha by absolute position 1..T.
- `num_beta_sets` sets of beta_k (eq 13), chosen per call: DSS uses one for input
  sequences and one for label (future) sequences; the prototypes, LayerNorms, W, b, b'
  and alpha are shared. beta is drawn from N(0, 1/D) as the paper says.
"""

import tensorflow as tf
import tf_keras

from models.layers import attention
from models.layers import embeddings

_LAYER_NORM_EPSILON = 1e-6
SUM, MEAN = "sum", "mean"
POOLINGS = (SUM, MEAN)


class IntentionDisentanglement(tf_keras.layers.Layer):
  """Per-prefix K intention vectors of an encoded sequence (eq 8-13).

  Attributes:
    dim: D.
    num_intentions: K.
    max_length: the longest sequence (positions of alpha).
    num_beta_sets: how many sets of beta_k (eq 13) the caller can choose from.
    pooling: "sum" (eq 13) or "mean" (eq 13 divided by each intention's share).
  """

  def __init__(self, dim: int, num_intentions: int, max_length: int, num_beta_sets: int = 2,
               pooling: str = SUM, **kwargs):
    super().__init__(**kwargs)
    if num_intentions < 1 or num_beta_sets < 1:
      raise ValueError(f"IntentionDisentanglement needs num_intentions >= 1 and num_beta_sets "
                       f">= 1, got {num_intentions} and {num_beta_sets}.")
    if pooling not in POOLINGS:
      raise ValueError(f"IntentionDisentanglement pooling must be one of {POOLINGS}, got "
                       f"{pooling!r}.")
    self.pooling = pooling
    self.dim = dim
    self.num_intentions = num_intentions
    self.num_beta_sets = num_beta_sets
    self.positions = embeddings.RecencyPositionEmbedding(max_length, dim, name="alpha")
    self.key_dense = tf_keras.layers.Dense(dim, activation="relu", name="key_dense")  # W, b

    def layer_norm(name):
      return tf_keras.layers.LayerNormalization(epsilon=_LAYER_NORM_EPSILON, name=name)

    self.intention_norm = layer_norm("intention_norm")  # LN1
    self.prototype_norm = layer_norm("prototype_norm")  # LN2
    self.key_norm = layer_norm("key_norm")  # LN3
    self.query_norm = layer_norm("query_norm")  # LN4
    self.output_norm = layer_norm("output_norm")  # LN5

  def build(self, input_shape):
    dim, k = self.dim, self.num_intentions
    self.prototypes = self.add_weight(name="prototypes", shape=[k, dim],  # c_k
                                      initializer="glorot_uniform")
    self.query_bias = self.add_weight(name="query_bias", shape=[dim],  # b'
                                      initializer="zeros")
    self.betas = self.add_weight(  # beta_k, one set per kind of sequence
        name="betas", shape=[self.num_beta_sets, k, dim],
        initializer=tf_keras.initializers.RandomNormal(stddev=dim ** -0.5))
    super().build(input_shape)

  def call(self, z, mask, beta_set: int = 0):
    """The K intentions after every prefix.

    Args:
      z: `[batch, len, D]` the encoder's outputs (position t encodes items 0..t).
      mask: `[batch, len]` bool, True at real items (left-aligned).
      beta_set: which set of beta_k (eq 13) to add.

    Returns:
      `[batch, len, K, D]`: row t is phi(x_{0..t}); rows past the sequence are padding.
    """
    dim = tf.cast(tf.shape(z)[-1], z.dtype)
    scale = tf.math.rsqrt(dim)
    # Eq 8: soft assignment of every position's intention to the K prototypes.
    assignment = attention.softmax(
        tf.einsum("bid,kd->bik", self.intention_norm(z),
                  self.prototype_norm(tf.convert_to_tensor(self.prototypes))) * scale,
        axis=-1)  # p_{k|i}: [B, L, K]
    # Eq 10-12: keys of every position, a query per prefix end t.
    alpha = self.positions(mask)
    keys = self.key_norm(alpha + z)
    keys = keys + self.key_dense(keys)
    queries = self.query_norm(alpha + z + self.query_bias)
    # Eq 9: each prefix end t attends over the real positions i <= t.
    length = tf.shape(mask)[1]
    causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)  # i <= t
    weights = attention.masked_softmax(
        tf.einsum("btd,bid->bti", queries, keys) * scale,
        causal[tf.newaxis] & mask[:, tf.newaxis, :])  # p_i(t): [B, L, L]
    # Eq 13.
    pooled = tf.einsum("bti,bik,bid->btkd", weights, assignment, z)
    if self.pooling == MEAN:  # padding rows have no share: keep them finite
      share = tf.einsum("bti,bik->btk", weights, assignment)
      pooled = tf.math.divide_no_nan(pooled, share[..., tf.newaxis])
    beta = tf.gather(tf.convert_to_tensor(self.betas), beta_set)  # [K, D]
    return self.output_norm(beta + pooled)
