"""Fusion of two user representations into one: SDM's gate and XDM's fusions.

    SDM gated fusion      G = sigmoid(W1 e_u + W2 s_t + W3 p_u + b)
                          o = (1 - G) * p_u + G * s_t                   (sdm-notes.md)
    XDM difference        z = h - n                                     (XDM eq 6)
    XDM confidence        G = sigmoid(W [h; n] + b),  z = h - G * n     (XDM eq 7-8)

XDM's eq 7 writes the confidence network without an activation; section 4.3 says it
is "a single layer feed-forward network with sigmoid activation function", which is
what `ConfidenceFusion` does: every dimension of n is subtracted with a weight in
(0, 1).
"""

import tensorflow as tf
import tf_keras


class GatedFusion(tf_keras.layers.Layer):
  """SDM's gate between the long-term p_u and the short-term s_t, conditioned on e_u.

  W1 e_u + W2 s_t + W3 p_u + b is one dense layer over the concatenation [e_u; s_t; p_u]
  (the same function, one matmul).
  """

  def __init__(self, dim: int, **kwargs):
    super().__init__(**kwargs)
    self.gate = tf_keras.layers.Dense(dim, activation="sigmoid", name="gate")

  def encode(self, user_vector, short_term, long_term):
    """`{"gate": G, "fused": o}`, both `[batch, dim]`."""
    gate = self.gate(tf.concat([user_vector, short_term, long_term], axis=-1))
    return {"gate": gate, "fused": (1.0 - gate) * long_term + gate * short_term}

  def call(self, user_vector, short_term, long_term):
    return self.encode(user_vector, short_term, long_term)["fused"]


def difference_fusion(clicked, unclicked):
  """XDM eq 6: z = h - n."""
  return clicked - unclicked


class ConfidenceFusion(tf_keras.layers.Layer):
  """XDM eq 7-8: z = h - G * n with G = sigmoid(W [h; n] + b) (section 4.3's one layer)."""

  def __init__(self, dim: int, **kwargs):
    super().__init__(**kwargs)
    self.confidence = tf_keras.layers.Dense(dim, activation="sigmoid", name="confidence")

  def encode(self, clicked, unclicked):
    """`{"confidence": G, "fused": z}`, both `[batch, dim]`."""
    confidence = self.confidence(tf.concat([clicked, unclicked], axis=-1))
    return {"confidence": confidence, "fused": clicked - confidence * unclicked}

  def call(self, clicked, unclicked):
    return self.encode(clicked, unclicked)["fused"]
