"""XDM's metric learning: the item-set encoder of eq 3 and the triplet losses of eq 4-5.

Lv et al., *XDM: Improving Sequential Deep Matching with Unclicked User Behaviors for
Recommender System* (../shared/papers/xdm.md). Three vectors per example: h (the
clicked sequence's representation, SDM's user vector), n (the unclicked items, eq 3)
and c (the label items, encoded "in the same way of n"). With squared Euclidean
distances e_hc = ||h - c||^2, e_hn = ||h - n||^2, e_cn = ||c - n||^2 and [x]_+ = max(0, x):

    asymmetric (eq 4)   [e_hc - e_hn + m]_+
    symmetric  (eq 5)   [2 e_hc - e_hn - e_cn + m*]_+

and the pair-only structures of Table 3, where one relation of the triplet is kept.
The paper names them (lab&clk: minimize the label-clicked distance; unclk&lab and
unclk&clk: maximize the unclicked-label and unclicked-clicked distances) without
formulas; here they are the contrastive pair losses with the same margin, so that a
pair already farther apart than the margin costs nothing, like a satisfied triplet:

    lab_clk    e_hc
    unclk_lab  [m - e_cn]_+
    unclk_clk  [m - e_hn]_+

The paper sums over users; these functions return the `[batch]` per-example terms (the
trainer averages per-example terms over the global batch, as it does the softmax).
"""

import tensorflow as tf
import tf_keras


ASYMMETRIC = "asymmetric"
SYMMETRIC = "symmetric"
LAB_CLK = "lab_clk"
UNCLK_LAB = "unclk_lab"
UNCLK_CLK = "unclk_clk"
STRUCTURES = (ASYMMETRIC, SYMMETRIC, LAB_CLK, UNCLK_LAB, UNCLK_CLK)
# The structures that involve the unclicked representation n.
USES_UNCLICKED = (ASYMMETRIC, SYMMETRIC, UNCLK_LAB, UNCLK_CLK)


def squared_distance(a, b):
  """`||a - b||^2` over the last axis: `[batch, dim]` x2 -> `[batch]`."""
  return tf.reduce_sum(tf.math.squared_difference(a, b), axis=-1)


def triplet_loss(clicked, unclicked, label, *, margin: float, structure: str = SYMMETRIC,
                 has_unclicked=None):
  """The per-example metric loss of one structure (see the module docstring).

  Args:
    clicked: h `[batch, dim]`.
    unclicked: n `[batch, dim]`.
    label: c `[batch, dim]`.
    margin: m (eq 4) or m* (eq 5), > 0.
    structure: one of `STRUCTURES`.
    has_unclicked: optional `[batch]` bool: examples without unclicked items have no n,
      so every structure that uses n gives them 0 (lab_clk does not use n).

  Returns:
    `[batch]` losses, >= 0.

  Raises:
    ValueError: unknown structure or a margin <= 0.
  """
  if structure not in STRUCTURES:
    raise ValueError(f"Unknown triplet structure {structure!r}; expected one of {STRUCTURES}.")
  if margin <= 0:
    raise ValueError(f"The triplet margin must be > 0, got {margin}.")
  e_hc = squared_distance(clicked, label)
  if structure == LAB_CLK:
    return e_hc
  e_hn = squared_distance(clicked, unclicked)
  e_cn = squared_distance(label, unclicked)
  loss = {
      ASYMMETRIC: lambda: tf.nn.relu(e_hc - e_hn + margin),
      SYMMETRIC: lambda: tf.nn.relu(2.0 * e_hc - e_hn - e_cn + margin),
      UNCLK_LAB: lambda: tf.nn.relu(margin - e_cn),
      UNCLK_CLK: lambda: tf.nn.relu(margin - e_hn),
  }[structure]()
  if has_unclicked is not None:
    loss *= tf.cast(has_unclicked, loss.dtype)
  return loss


class ItemSetEncoder(tf_keras.layers.Layer):
  """XDM eq 3: n = f(mean of the set's item vectors), f a dense layer with tanh.

  The same encoder (the same weights) gives c from the label items. An empty set (a
  user never shown anything before the request) has no representation: its vector is
  exactly 0, not f(0) = tanh(b), so the fusion leaves h unchanged (z = h - G * 0) and
  `has_items` tells the triplet loss to skip the example.
  """

  def __init__(self, dim: int, **kwargs):
    super().__init__(**kwargs)
    self.feed_forward = tf_keras.layers.Dense(dim, activation="tanh", name="feed_forward")

  def call(self, mean_items, has_items):
    """Encodes item sets from their mean item vector.

    Args:
      mean_items: `[batch, input_dim]` the mean of each set's item vectors (zero for an
        empty set; `SDM.mean_item_inputs`, or `pooling.masked_mean`).
      has_items: `[batch]` bool, whether the set has any item.

    Returns:
      `(vectors [batch, dim], has_items [batch] bool)`: f(mean), exactly 0 for an empty set.
    """
    vectors = self.feed_forward(mean_items)
    return vectors * tf.cast(has_items, vectors.dtype)[:, tf.newaxis], has_items
