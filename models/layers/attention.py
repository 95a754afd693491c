"""Attention over padded item sequences: softmaxes, multi-head self-attention, pooling.

Every softmax of the models goes through `softmax` here, written as exp-normalize
rather than the `Softmax` op: inside the functions of a loaded SavedModel (the export,
the retrieval artifact) Grappler cannot infer the `Softmax` op's input rank and prints
a long "Error in PredictCost()" warning for each one (tensorflow#50575), harmless but
noise on every serving process's stderr. Use `softmax`, `masked_softmax` and
`MultiHeadSelfAttention` in new models rather than `tf.nn.softmax` or Keras'
MultiHeadAttention.
"""

import tensorflow as tf
import tf_keras

# Added to the logits of masked positions. Finite (unlike -inf) so that a row whose
# positions are all masked gives uniform weights instead of NaN.
_MASKED_LOGIT = -1e9


def softmax(logits, axis=-1):
  """`tf.nn.softmax` as exp(x - max) / sum (see the module docstring)."""
  shifted = logits - tf.stop_gradient(tf.reduce_max(logits, axis=axis, keepdims=True))
  exp = tf.exp(shifted)
  return exp / tf.reduce_sum(exp, axis=axis, keepdims=True)


def masked_softmax(logits, mask, axis=-1):
  """Softmax along `axis` that gives masked positions exactly zero weight.

  Args:
    logits: float tensor.
    mask: bool tensor broadcastable to `logits`, True where a position may be attended.
    axis: the softmax axis.

  Returns:
    Weights shaped like `logits`, summing to 1 along `axis`.
  """
  return softmax(tf.where(mask, logits, tf.cast(_MASKED_LOGIT, logits.dtype)), axis=axis)


class MultiHeadSelfAttention(tf_keras.layers.Layer):
  """Scaled dot-product self-attention with `num_heads` heads (Vaswani et al., 2017).

      head_h = softmax(Q_h K_h^T / sqrt(d_h) + mask) V_h,  Q = X W_Q + b_Q, ... (per head)
      output = concat_h(head_h) W_O + b_O

  Attributes:
    num_heads: H; the input dim must be a multiple of it (d_h = dim / H).
    dropout: dropout on the attention weights (training only).
  """

  def __init__(self, num_heads: int = 1, dropout: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    if num_heads < 1:
      raise ValueError(f"num_heads must be >= 1, got {num_heads}.")
    self.num_heads = num_heads
    self.dropout = tf_keras.layers.Dropout(dropout)

  def build(self, input_shape):
    dim = int(input_shape[-1])
    if dim % self.num_heads:
      raise ValueError(f"dim {dim} must be a multiple of num_heads {self.num_heads}.")
    self.query = tf_keras.layers.Dense(dim, name="query")  # W_Q, b_Q
    self.key = tf_keras.layers.Dense(dim, name="key")
    self.value = tf_keras.layers.Dense(dim, name="value")
    self.output_dense = tf_keras.layers.Dense(dim, name="output")  # W_O, b_O
    super().build(input_shape)

  def call(self, inputs, mask, training=False):
    """Self-attention over `inputs`.

    Args:
      inputs: `[batch, len, dim]`.
      mask: `[batch, len, len]` bool, True where query position t may attend key i
        (or broadcastable to it).
      training: applies dropout to the attention weights.

    Returns:
      `[batch, len, dim]`.
    """
    batch, length = tf.shape(inputs)[0], tf.shape(inputs)[1]
    dim = inputs.shape[-1]
    head_dim = dim // self.num_heads

    def heads(x):  # [B, L, D] -> [B, H, L, d_h]
      return tf.transpose(tf.reshape(x, [batch, length, self.num_heads, head_dim]), [0, 2, 1, 3])

    query, key, value = heads(self.query(inputs)), heads(self.key(inputs)), heads(self.value(inputs))
    logits = tf.matmul(query, key, transpose_b=True) * head_dim ** -0.5  # [B, H, L, L]
    weights = self.dropout(masked_softmax(logits, mask[:, tf.newaxis]), training=training)
    attended = tf.transpose(tf.matmul(weights, value), [0, 2, 1, 3])  # [B, L, H, d_h]
    return self.output_dense(tf.reshape(attended, [batch, length, dim]))


class SelfAttentivePooling(tf_keras.layers.Layer):
  """Structured self-attention (Lin et al., 2017) with one weight set per head.

  For each head h, the weights over positions t are

      a^h = softmax_t(tanh(X W_{h,1}) w_{h,2}),   W_{h,1}: [dim, hidden], w_{h,2}: [hidden],

  with padded positions masked out. This is SINE's eq 1 (one head), eq 4 (one head per
  activated intention) and eq 6 (one head). All heads share one matmul of width
  `num_heads * hidden` so there is no loop over heads.

  Attributes:
    num_heads: number of independent attention heads H.
    hidden_dim: width of W_{h,1}; None means the input dim (the papers' D x D).
    use_bias: add a bias inside the tanh (the SINE paper has none).
  """

  def __init__(self, num_heads: int = 1, hidden_dim=None, use_bias: bool = False,
               kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(**kwargs)
    if num_heads < 1:
      raise ValueError(f"num_heads must be >= 1, got {num_heads}.")
    self.num_heads = num_heads
    self.hidden_dim = hidden_dim
    self.use_bias = use_bias
    self.kernel_initializer = tf_keras.initializers.get(kernel_initializer)

  def build(self, input_shape):
    dim = int(input_shape[-1])
    hidden = self.hidden_dim or dim
    self._hidden = hidden
    # W_{h,1} for all heads side by side: column block h belongs to head h.
    self.hidden_kernel = self.add_weight(
        name="hidden_kernel", shape=[dim, self.num_heads * hidden], initializer=self._initializer())
    self.hidden_bias = (self.add_weight(name="hidden_bias", shape=[self.num_heads * hidden],
                                        initializer="zeros") if self.use_bias else None)
    self.score_kernel = self.add_weight(
        name="score_kernel", shape=[self.num_heads, hidden], initializer=self._initializer())
    super().build(input_shape)

  def _initializer(self):
    # A fresh instance per weight: Keras warns that reusing an unseeded instance
    # repeats its values.
    return tf_keras.initializers.get(tf_keras.initializers.serialize(self.kernel_initializer))

  def call(self, inputs, mask):
    """Attention weights of every head over the positions.

    Args:
      inputs: `[batch, seq_len, dim]`.
      mask: `[batch, seq_len]` bool, True at real items.

    Returns:
      `[batch, num_heads, seq_len]` weights; zero at padding, each row sums to 1.
    """
    batch, seq_len = tf.shape(inputs)[0], tf.shape(inputs)[1]
    # 2-D matmuls: a [batch, seq_len, dim] x [dim, n] matmul would broadcast the kernel
    # over the batch and make its gradient a batched matmul plus a sum.
    hidden = tf.matmul(tf.reshape(inputs, [-1, inputs.shape[-1]]), self.hidden_kernel)
    if self.hidden_bias is not None:
      hidden += self.hidden_bias
    # Head h only sees its own hidden block: a block-diagonal [heads * hidden, heads]
    # matrix applies every w_{h,2} in one matmul.
    block_diagonal = tf.reshape(
        self.score_kernel[:, :, tf.newaxis] * tf.eye(self.num_heads)[:, tf.newaxis, :],
        [self.num_heads * self._hidden, self.num_heads])
    logits = tf.matmul(tf.tanh(hidden), block_diagonal)  # [batch * seq_len, heads]
    logits = tf.transpose(tf.reshape(logits, [batch, seq_len, self.num_heads]), [0, 2, 1])
    return masked_softmax(logits, mask[:, tf.newaxis, :])

  def get_config(self):
    return {**super().get_config(), "num_heads": self.num_heads, "hidden_dim": self.hidden_dim,
            "use_bias": self.use_bias,
            "kernel_initializer": tf_keras.initializers.serialize(self.kernel_initializer)}
