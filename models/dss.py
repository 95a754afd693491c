"""DSS: Disentangled Self-Supervision in Sequential Recommenders (Ma et al., KDD 2020).

Equation numbers refer to ../shared/papers/dss.md. A single-head SASRec encoder
(`models/sasrec.py`'s layers, shared item embeddings) followed by the
intention-disentanglement layer (`models/layers/disentanglement.py`, eq 8-13) gives K
intention vectors phi_k per prefix. Training minimizes (eq 7)

    L = L_s2i + L_s2s
    L_s2i(u, t) = -log( max_k exp(h_{t+1} . phi_k(x_{1:t}) / sqrt(D)) /
                        sum_j sum_k' exp(h_j . phi_k'(x_{1:t}) / sqrt(D)) )        eq 5-6
    L_s2s(u, t, k) = -log( exp(phi_k(x_{T:t+1}) . phi_k(x_{1:t}) / sqrt(D)) /
                           sum_{(u',t') in B} sum_k' exp(phi_k'(x_{T':t'+1}) . phi_k(x_{1:t}) / sqrt(D)) )   eq 3
    keeping only the ceil(lambda |B| K) smallest L_s2s terms of the batch          eq 4

Serving retrieves with the K vectors of the whole history (an item's score is its best
over them; the artifact merges the K lists).

Choices where the paper is silent, or that adapt it to the project:
- Training batches are `samples.AllPositionsWithFuture` windows, not one (u, t) drawn
  uniformly per row (section 3.2): every (u, t) of the train split is still a term
  exactly once per epoch, but one encoder pass over a window trains all its prefixes
  (as `sasrec` trains), and one causal pass over the window's reversed future gives
  every prefix's reversed future sequence x_{T:t+1} at once. The future of a prefix
  reaches `future_length` items past the window's last target (for the S3-Rec files,
  whose users average 9 items, that is the whole remaining sequence).
- Seq2seq terms come from `seq2seq_prefixes` prefixes drawn uniformly from each
  window (1 by default: like the paper's batches, one (u, t) per batch row), not from
  every position: eq 3's softmax is over all K x |B| futures of the batch, and a
  batch of 256 windows holds up to 12,800 prefixes (a 51,200 x 51,200 logit matrix).
  The softmax runs over the futures of the batch's drawn prefixes, as the paper says,
  except the other drawn prefixes of the same window: their futures overlap the
  positive's (x_{T:t+2} is most of x_{T:t+1}), which in the paper's uniformly sampled
  batches almost never happens, and would make near-copies of the positive count as
  negatives.
- Eq 6's denominator runs over the items of the mini-batch in the paper; here it runs
  over the trainer's softmax head: the whole catalog (full softmax) or sampled
  log-uniform negatives with the logQ correction for large catalogs, the positive
  scored by its best intention and the normalizer over every (item, intention) pair
  (`models/losses.py`, multi-vector heads).
- The item logits of eq 5-6 are h . phi_k times `item_logit_scale` (the user vectors
  are phi_k times it): 1 by default, as SASRec scores, not the paper's 1/sqrt(D).
  phi_k is LayerNorm'd (length about sqrt(D)), so with 1/sqrt(D) the item embeddings
  must grow sqrt(D) times longer before a softmax over a whole catalog (not the
  paper's ~100 in-batch items) can peak; on Beauty it learned half as fast (docs/dss.md).
  Eq 3 keeps the paper's 1/sqrt(D).
- `intention_pooling` "mean" (default) divides eq 13's sum by each intention's share
  (`models/layers/disentanglement.py` says why); "sum" is eq 13 as written.
- `seq2seq_negatives` "same_intention" (default): the softmax of eq 3 for intention k
  runs over the batch's futures' intention k only. Eq 3 as written ("all") also
  counts the other K - 1 intentions of every future; it can then lower the loss from
  log(K |B|) towards log(|B|) without telling users apart, just by making each
  intention recognizable (through beta_k) and the same for everyone. On Beauty it did
  exactly that: the intentions' spread across users fell to 3% of their length (18%
  without seq2seq) and the seq2item loss stopped learning (docs/dss.md).
- The SASRec encoder's position table covers `max_length + future_length` positions,
  since future sequences can be that long; positions count from the newest item.
- Table 2's ablations are `seq2seq` settings: "latent" (the method), "none" (variant
  1), "next_items" with `reconstruct_items` future items each predicted by the seq2item
  loss (variant 3 with 3; variant 2, all future items, with `future_length`).
"""

import dataclasses
import math

import tensorflow as tf

from common import names
from input_pipeline import samples
from models import base
from models import registry
from models.layers import disentanglement
from models.layers import embeddings
from models.layers import sequence_encoders

LATENT = "latent"
NONE = "none"
NEXT_ITEMS = "next_items"
SEQ2SEQ_MODES = (LATENT, NONE, NEXT_ITEMS)
SAME_INTENTION = "same_intention"  # eq 3's softmax over the batch's futures of intention k
ALL_INTENTIONS = "all"  # over every intention of every future of the batch (eq 3 as written)
SEQ2SEQ_NEGATIVES = (SAME_INTENTION, ALL_INTENTIONS)
INPUT_BETAS, LABEL_BETAS = 0, 1  # the two sets of beta_k of eq 13


@dataclasses.dataclass(frozen=True)
class DSSConfig:
  """DSS hyper-parameters (section 4.1: D from {16..256}, 1-3 blocks, K from 1..8,
  lambda from {0.05..1}, dropout from {0..0.9}, tuned by random search).

  Attributes:
    embedding_dim: D.
    max_length: the longest input history (50 for Beauty and Steam).
    num_blocks: SASRec self-attention blocks (single head, as the paper).
    dropout: dropout of the SASRec encoder.
    num_intentions: K.
    confidence: lambda of eq 4, the fraction of seq2seq terms kept (0: seq2item only).
    seq2seq_prefixes: prefixes drawn per training window for the seq2seq loss.
    seq2seq: "latent" (eq 3-4), "none" (Table 2 variant 1) or "next_items" (variants 2-3).
    reconstruct_items: future items predicted one by one in "next_items" mode.
    future_length: how far past a training window's last target the future reaches.
    item_logit_scale: multiplies the item logits h . phi_k of eq 5-6 (the paper:
      1/sqrt(D); module docstring).
    intention_pooling: "mean" or "sum" (eq 13 as written); module docstring.
    seq2seq_negatives: "same_intention" or "all" (eq 3 as written); module docstring.
  """
  embedding_dim: int = 64
  max_length: int = 50
  num_blocks: int = 2
  dropout: float = 0.5
  num_intentions: int = 4
  confidence: float = 0.5
  seq2seq_prefixes: int = 1
  seq2seq: str = LATENT
  reconstruct_items: int = 3
  future_length: int = 50
  item_logit_scale: float = 1.0
  intention_pooling: str = disentanglement.MEAN
  seq2seq_negatives: str = SAME_INTENTION

  def __post_init__(self):
    for name in ("embedding_dim", "max_length", "num_blocks", "num_intentions",
                 "seq2seq_prefixes", "reconstruct_items", "future_length"):
      if getattr(self, name) < 1:
        raise ValueError(f"DSSConfig.{name} must be >= 1, got {getattr(self, name)}.")
    if not 0 <= self.confidence <= 1:
      raise ValueError(f"DSSConfig.confidence (lambda) must be in [0, 1], got {self.confidence}.")
    if self.seq2seq not in SEQ2SEQ_MODES:
      raise ValueError(f"DSSConfig.seq2seq must be one of {SEQ2SEQ_MODES}, got {self.seq2seq!r}.")
    if not 0 <= self.dropout < 1:
      raise ValueError(f"DSSConfig.dropout must be in [0, 1), got {self.dropout}.")
    if self.item_logit_scale <= 0:
      raise ValueError(f"DSSConfig.item_logit_scale must be > 0, got {self.item_logit_scale}.")
    if self.seq2seq_negatives not in SEQ2SEQ_NEGATIVES:
      raise ValueError(f"DSSConfig.seq2seq_negatives must be one of {SEQ2SEQ_NEGATIVES}, got "
                       f"{self.seq2seq_negatives!r}.")
    if self.intention_pooling not in disentanglement.POOLINGS:
      raise ValueError(f"DSSConfig.intention_pooling must be one of "
                       f"{disentanglement.POOLINGS}, got {self.intention_pooling!r}.")


def confident_terms(term_losses, fraction: float):
  """Eq 4's mask: True at the ceil(fraction * n) smallest of the `[n]` losses.

  Ties at the threshold are broken by position (exactly that many terms are kept).
  """
  count = tf.shape(term_losses)[0]
  keep = tf.cast(tf.math.ceil(fraction * tf.cast(count, tf.float32)), tf.int32)
  order = tf.argsort(tf.stop_gradient(term_losses), stable=True)
  return tf.scatter_nd(order[:keep, tf.newaxis], tf.ones([keep], tf.bool), [count])


def seq2seq_losses(prefix, future, example, fraction: float, negatives: str = SAME_INTENTION):
  """Eq 3-4 for N prefixes: `[N]` sums of their kept per-intention losses.

  Args:
    prefix: `[N, K, D]` phi_k(x_{1:t}) / sqrt(D) of every prefix.
    future: `[N, K, D]` phi_k(x_{T:t+1}) of its reversed future.
    example: `[N]` the batch row (window) of each prefix; the futures of the same
      window's other prefixes are left out of each softmax (module docstring).
    fraction: lambda of eq 4.
    negatives: SAME_INTENTION: the softmax of intention k runs over the futures'
      intention k; ALL_INTENTIONS: over all K of every future (module docstring).

  Returns:
    `[N]` losses, each the sum of its kept terms over k.
  """
  n, k = tf.shape(prefix)[0], tf.shape(prefix)[1]
  flat_prefix = tf.reshape(prefix, [n * k, -1])
  flat_future = tf.reshape(future, [n * k, -1])
  logits = tf.matmul(flat_prefix, flat_future, transpose_b=True)  # [(n, k), (n', k')]
  owner = tf.repeat(tf.range(n), k)  # the prefix of each row / column
  window = tf.gather(example, owner)
  left_out = ((window[:, tf.newaxis] == window[tf.newaxis, :]) &
              (owner[:, tf.newaxis] != owner[tf.newaxis, :]))  # the same window's other prefixes
  if negatives == SAME_INTENTION:
    intention = tf.tile(tf.range(k), [n])
    left_out |= intention[:, tf.newaxis] != intention[tf.newaxis, :]
  logits = tf.where(left_out, tf.cast(-1e9, logits.dtype), logits)
  terms = tf.reduce_logsumexp(logits, axis=1) - tf.linalg.diag_part(logits)  # [(n, k)]
  kept = tf.cast(confident_terms(terms, fraction), terms.dtype)
  return tf.reduce_sum(tf.reshape(terms * kept, [n, k]), axis=1)


@registry.register("dss", DSSConfig)
class DSS(base.RetrievalModel):
  """SASRec encoder + intention disentanglement; seq2item and latent seq2seq losses."""

  def __init__(self, config: DSSConfig, *, data, **kwargs):
    super().__init__(data=data, **kwargs)
    self.config = config
    dim = config.embedding_dim
    positions = config.max_length + config.future_length
    self.item_embedding = embeddings.ItemEmbedding(self.num_items, dim, name="item_embedding")
    self.encoder = sequence_encoders.CausalSelfAttentionEncoder(
        dim, positions, config.num_blocks, 1, config.dropout, name="encoder")
    self.disentangle = disentanglement.IntentionDisentanglement(
        dim, config.num_intentions, positions, pooling=config.intention_pooling,
        name="disentangle")

  def sample_spec(self) -> samples.SampleSpec:
    training = (samples.AllPositions() if self.config.seq2seq == NONE
                else samples.AllPositionsWithFuture(self.config.future_length))
    return samples.SampleSpec(features=(samples.History(self.config.max_length),),
                              training=training)

  def intentions(self, items, training=False, beta_set=INPUT_BETAS):
    """`[batch, len]` item ids -> `[batch, len, K, D]` phi_k of every prefix (eq 8-13)."""
    mask = self.item_embedding.padding_mask(items)
    z = self.encoder(self.item_embedding(items), mask, training=training)
    return self.disentangle(z, mask, beta_set)

  def call(self, features, training=False):
    """Model contract of `models.base`.

    Returns:
      USER_VECTORS `[batch, K, D]` (phi_k(x_{1:t}) * item_logit_scale of the whole
      history) and, with LABELS: the head "next_item" (eq 5-6, every window position),
      the "next_item_n" heads of the "next_items" ablation, and AUX_LOSSES {"seq2seq":
      `[batch]`} (eq 3-4) in "latent" mode.
    """
    phi = self.intentions(features[names.HISTORY], training)  # [B, L, K, D]
    prefix = phi * self.config.item_logit_scale
    length = tf.maximum(tf.cast(features[names.HISTORY_LENGTH], tf.int32) - 1, 0)
    outputs = {names.USER_VECTORS: tf.gather(prefix, length, batch_dims=1)}
    if names.LABELS not in features:
      return outputs
    labels, weights = features[names.LABELS], features.get(names.LABEL_WEIGHTS)
    outputs[names.HEADS] = {"next_item": base.Head(prefix, labels, weights)}
    if self.config.seq2seq == NONE:
      return outputs
    future, future_length = features[names.FUTURE], features[names.FUTURE_LENGTH]
    # Window position p is followed by FUTURE[future_length - 1 - p] (samples docs).
    steps = tf.shape(labels)[1]
    at_future = future_length[:, tf.newaxis] - 1 - tf.range(steps, dtype=tf.int64)  # [B, L]
    if self.config.seq2seq == NEXT_ITEMS:
      for n in range(2, self.config.reconstruct_items + 1):
        index = at_future - (n - 1)
        item = tf.gather(future, tf.maximum(index, 0), batch_dims=1)
        item = tf.where((index >= 0) & (labels != self.data.pad_id), item, self.data.pad_id)
        outputs[names.HEADS][f"next_item_{n}"] = base.Head(prefix, item, weights)
      return outputs
    future_intentions = self.intentions(future, training, LABEL_BETAS)  # [B, F, K, D]
    real = self._drawn_prefixes(labels)  # [N, 2]: (window, position)
    example = real[:, 0]
    positives = tf.gather_nd(future_intentions,
                             tf.stack([example, tf.gather_nd(at_future, real)], axis=1))
    eq3_scale = 1.0 / math.sqrt(self.config.embedding_dim)
    per_prefix = seq2seq_losses(tf.gather_nd(phi, real) * eq3_scale, positives, example,
                                self.config.confidence, self.config.seq2seq_negatives)
    outputs[names.AUX_LOSSES] = {"seq2seq": tf.math.unsorted_segment_sum(
        per_prefix, example, tf.shape(labels, out_type=tf.int64)[0])}
    return outputs

  def _drawn_prefixes(self, labels):
    """`[N, 2]` (window, position) of up to `seq2seq_prefixes` real positions per window,
    drawn uniformly without replacement."""
    real = labels != self.data.pad_id
    draw = tf.where(real, tf.random.uniform(tf.shape(labels)), 2.0)  # padding sorts last
    count = tf.minimum(tf.shape(labels)[1], self.config.seq2seq_prefixes)
    values, position = tf.math.top_k(-draw, k=count)  # the smallest draws
    chosen = tf.where(-values < 2.0)  # [N, 2]: (window, slot) of real positions
    return tf.stack([chosen[:, 0], tf.cast(tf.gather_nd(position, chosen), tf.int64)], axis=1)
