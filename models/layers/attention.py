"""Attention over padded item sequences: masked softmax and self-attentive pooling."""

import tensorflow as tf
import tf_keras

# Added to the logits of masked positions. Finite (unlike -inf) so that a row whose
# positions are all masked gives uniform weights instead of NaN.
_MASKED_LOGIT = -1e9


def masked_softmax(logits, mask, axis=-1):
  """Softmax along `axis` that gives masked positions exactly zero weight.

  Args:
    logits: float tensor.
    mask: bool tensor broadcastable to `logits`, True where a position may be attended.
    axis: the softmax axis.

  Returns:
    Weights shaped like `logits`, summing to 1 along `axis`.
  """
  return tf.nn.softmax(tf.where(mask, logits, tf.cast(_MASKED_LOGIT, logits.dtype)), axis=axis)


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
