"""XDM: Sequential Deep Matching with unclicked user behaviors (Lv et al., 2021).

Equation numbers refer to ../shared/papers/xdm.md. XDM is SDM (models/sdm.py, the
"deep sequential recommender" of eq 1) plus a plug-in for the items a user was shown
but did not click:

    eq 1     h = SDM(S+_{u,t}; e_u)                        the clicked representation
    eq 3     n = f(mean_{i in S-_{u,t}} q_i),  f = dense + tanh   the unclicked items
             c = f(mean_{i in C_{u,t}} q_i)                the next k clicked items (labels)
    eq 4     L_tri = [||h - c||^2 - ||h - n||^2 + m]_+                      asymmetric
    eq 5     L_tri = [2 ||h - c||^2 - ||h - n||^2 - ||c - n||^2 + m*]_+      symmetric
    eq 6     z = h - n                                      difference fusion
    eq 7-8   G = sigmoid(W [h; n] + b),  z = h - G * n      confidence fusion
    eq 9     L = L_ce(z, C_{u,t}, sampled negatives) + lambda L_tri

z is the served user vector; h, n and c exist in training only for the triplet loss
(c needs the labels). The layers are shared ones: SDM's encoders through the `SDM`
class this model extends (same variables, same names), `metric_learning` (eq 3-5) and
`fusion` (eq 6-8).

Every model of Table 2 and Table 3 is a config (`VARIANTS`, `variant_config`):

    xdm                   confidence fusion + symmetric triplet (eq 5, 8)
    xdm_wo_sym            confidence fusion + asymmetric triplet (eq 4, 8)
    xdm_wo_fusion_sym     no fusion (z = h) + asymmetric triplet (eq 4)
    xdm_wo_metric         confidence fusion, no metric loss (eq 8)
    xdm_wo_conf_metric    difference fusion, no metric loss (eq 6)
    xdm_unclk_lab, xdm_lab_clk, xdm_unclk_clk    Table 3's pair-only structures with
                          confidence fusion (models/layers/metric_learning.py)

Choices where the paper is silent:
- q_i of eq 3 is the same input vector as a clicked item's (id and side features,
  "the same as i in S+"); the same f (same weights) encodes n and c.
- A user with no unclicked item before the request has n = 0 (not f(0)): the fusion
  returns h unchanged, and the example's triplet term is 0 (no triplet without n;
  the lab_clk pair, which does not use n, still applies).
- The confidence network has a sigmoid (section 4.3), see models/layers/fusion.py.
- The unclicked sequence: the impressions strictly before the request, latest first,
  at most `max_unclicked` (100). Section 4.1's filters (impressions of the last three
  days, items exposed more than k = 1 times) are options, off by default: they were
  chosen to denoise Taobao's exposure logs (71 unclicked items per sequence after
  filtering), and on logs with a few impressions per click they empty most
  sequences. Set `unclicked_window=259200 exposed_more_than=1` for the paper's rules.
- Everything else (labels, sessions, long-term behaviors, the softmax head) is SDM's.

Not in the paper, off by default: `learned_scale` multiplies z by a learned scalar
s = exp(a) > 0 (a starts at 0) in the softmax and at serving, where it leaves the
ranking unchanged. Eq 5's argument is ||h - (2c - n)||^2 - 3 ||c - n||^2 + m*, so it
keeps h within a ball around 2c - n, and c, n are tanh outputs (|c| <= sqrt(D)): on
the synthetic log the trained XDM's |z| is about 3, SDM's about 15, and a short user
vector cannot make a peaked softmax. s lets the logits grow without touching eq 5
(docs/xdm.md measures both).
"""

import dataclasses
from typing import Optional

import tensorflow as tf

from common import names
from input_pipeline import samples
from models import base
from models import registry
from models import sdm
from models.layers import fusion as fusion_lib
from models.layers import metric_learning

NO_FUSION = "none"
DIFFERENCE = "difference"
CONFIDENCE = "confidence"
FUSIONS = (NO_FUSION, DIFFERENCE, CONFIDENCE)
NO_METRIC = "none"
METRICS = (NO_METRIC,) + metric_learning.STRUCTURES

# Extra outputs (not served).
CLICKED = "clicked"  # [batch, dim] h (eq 1)
UNCLICKED = "unclicked_vector"  # [batch, dim] n (eq 3), 0 without unclicked items
CONFIDENCE_GATE = "confidence"  # [batch, dim] G (eq 7), with confidence fusion

# Table 2 and Table 3: name -> (fusion, metric).
VARIANTS = {
    "xdm": (CONFIDENCE, metric_learning.SYMMETRIC),
    "xdm_wo_sym": (CONFIDENCE, metric_learning.ASYMMETRIC),
    "xdm_wo_fusion_sym": (NO_FUSION, metric_learning.ASYMMETRIC),
    "xdm_wo_metric": (CONFIDENCE, NO_METRIC),
    "xdm_wo_conf_metric": (DIFFERENCE, NO_METRIC),
    "xdm_unclk_lab": (CONFIDENCE, metric_learning.UNCLK_LAB),
    "xdm_lab_clk": (CONFIDENCE, metric_learning.LAB_CLK),
    "xdm_unclk_clk": (CONFIDENCE, metric_learning.UNCLK_CLK),
}


@dataclasses.dataclass(frozen=True)
class XDMConfig(sdm.SDMConfig):
  """XDM hyper-parameters: SDM's (the base model) plus the paper's section 4.3 values.

  Attributes:
    max_unclicked: the newest this many unclicked items are read (100, section 4.1).
    unclicked_window: only impressions this many seconds before the request (the
      paper's rule 1: 3 days = 259200); None: all.
    exposed_more_than: only items shown more than this many times, once each (the
      paper's rule 2: k = 1); None: every impression as logged.
    fusion: "confidence" (eq 7-8), "difference" (eq 6) or "none" (z = h).
    metric: "symmetric" (eq 5), "asymmetric" (eq 4), a Table 3 pair ("unclk_lab",
      "lab_clk", "unclk_clk") or "none".
    margin: m* of eq 5 (m of eq 4): 5.
    triplet_weight: lambda of eq 9: 10.
    learned_scale: z times a learned scalar exp(a) in the softmax and at serving (not
      in the paper; see the module docstring).
  """
  max_unclicked: int = 100
  unclicked_window: Optional[int] = None
  exposed_more_than: Optional[int] = None
  fusion: str = CONFIDENCE
  metric: str = metric_learning.SYMMETRIC
  margin: float = 5.0
  triplet_weight: float = 10.0
  learned_scale: bool = False

  def __post_init__(self):
    super().__post_init__()
    if self.fusion not in FUSIONS:
      raise ValueError(f"XDMConfig.fusion {self.fusion!r}: expected one of {FUSIONS}.")
    if self.metric not in METRICS:
      raise ValueError(f"XDMConfig.metric {self.metric!r}: expected one of {METRICS}.")
    if self.margin <= 0:
      raise ValueError(f"XDMConfig.margin must be > 0, got {self.margin}.")
    if self.triplet_weight < 0:
      raise ValueError(f"XDMConfig.triplet_weight must be >= 0, got {self.triplet_weight}.")
    # Unclicked's own checks (max_items, window, exposed_more_than) give the message.
    samples.Unclicked(self.max_unclicked, self.unclicked_window, self.exposed_more_than)


def variant_config(variant: str, **overrides) -> XDMConfig:
  """The config of a Table 2 / Table 3 model, e.g. `variant_config("xdm_wo_sym", embedding_dim=64)`."""
  if variant not in VARIANTS:
    raise ValueError(f"Unknown XDM variant {variant!r}; known: {sorted(VARIANTS)}.")
  fusion, metric = VARIANTS[variant]
  return XDMConfig(**{"fusion": fusion, "metric": metric, **overrides})


@registry.register("xdm", XDMConfig)
class XDM(sdm.SDM):
  """SDM's clicked representation h, the unclicked representation n, fused into z."""

  def __init__(self, config: XDMConfig, *, data, **kwargs):
    if not data.has("impressions"):
      raise ValueError(
          "XDM reads the items shown to a user but not clicked, and this data set has no "
          "impressions (stats.json has_impressions is false). Prepare a log with impressions "
          "(the synthetic generator, trivago, a csv with --label_column), or train sdm.")
    super().__init__(config, data=data, **kwargs)
    self.item_set_encoder = metric_learning.ItemSetEncoder(config.embedding_dim,
                                                           name="item_set_encoder")
    self.confidence = None
    if config.fusion == CONFIDENCE:
      self.confidence = fusion_lib.ConfidenceFusion(config.embedding_dim, name="confidence")
    self.log_scale = None
    if config.learned_scale:
      self.log_scale = self.add_weight(name="log_score_scale", shape=(), initializer="zeros")

  def feature_sets(self):
    """SDM's feature sets plus the unclicked sequence."""
    config = self.config
    return super().feature_sets() + [samples.Unclicked(
        config.max_unclicked, config.unclicked_window if self.timed else None,
        config.exposed_more_than)]

  def encode_items(self, ids):
    """Eq 3 over a padded item set `[batch, n]`: `(vectors [batch, dim], has_items [batch])`."""
    return self.item_set_encoder(*self.mean_item_inputs(ids))

  def fuse(self, clicked, unclicked):
    """`(z, G or None)`: eq 8, eq 6 or z = h by `config.fusion`."""
    if self.config.fusion == CONFIDENCE:
      fused = self.confidence.encode(clicked, unclicked)
      return fused["fused"], fused["confidence"]
    if self.config.fusion == DIFFERENCE:
      return fusion_lib.difference_fusion(clicked, unclicked), None
    return clicked, None

  def call(self, features, training=False):
    """Model contract of `models.base`.

    Returns:
      USER_VECTORS `[batch, 1, dim]` = z (eq 6/8, or h without fusion; times s with
      `learned_scale`); CLICKED h,
      UNCLICKED n (and CONFIDENCE_GATE G) for analysis; with LABELS the head
      "next_clicks" (z against each of the next k clicks, eq 9's L_ce) and, unless
      metric is "none", AUX_LOSSES {"triplet": lambda * L_tri} `[batch]`.
    """
    encoded = self.encode(features, training=training)
    clicked = encoded["user_vector"]
    unclicked, has_unclicked = self.encode_items(features[names.UNCLICKED])
    user_vector, confidence = self.fuse(clicked, unclicked)
    if self.log_scale is not None:
      user_vector = tf.exp(self.log_scale) * user_vector
    outputs = {names.USER_VECTORS: user_vector[:, tf.newaxis, :], CLICKED: clicked,
               UNCLICKED: unclicked,
               sdm.SHORT_TERM: encoded["short_term"]["interest"],
               sdm.LONG_TERM: encoded["long_term"]["interest"], sdm.GATE: encoded["gate"]}
    if confidence is not None:
      outputs[CONFIDENCE_GATE] = confidence
    if names.LABELS in features:
      labels = features[names.LABELS]
      outputs[names.HEADS] = {"next_clicks": base.Head(user_vector, labels)}
      if self.config.metric != NO_METRIC:
        label_vector, _ = self.encode_items(labels)
        triplet = metric_learning.triplet_loss(
            clicked, unclicked, label_vector, margin=self.config.margin,
            structure=self.config.metric, has_unclicked=has_unclicked)
        outputs[names.AUX_LOSSES] = {"triplet": self.config.triplet_weight * triplet}
    return outputs
