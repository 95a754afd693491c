"""SDM: Sequential Deep Matching (Lv et al., CIKM 2019), the base model of XDM.

The paper is not in ../shared/papers; ../shared/papers/sdm-notes.md summarizes it and
the XDM paper (xdm.md, section 3.2-3.3, eq 1-2) restates its role: h_{u,t} =
DSR(S_{u,t}; e_u), scores h^T q_i. Notation of the notes:

    input item    q_i = [E_id(i); v_1(i); ...; v_F(i)]    id and side-feature fields
    profile       e_u = tanh(W_u [profile field embeddings] + b_u), or a learned vector
    short-term    s_t = UserAttention(MultiHead(LSTM(S_u)), e_u)       (session S_u)
    long-term     p_u = tanh(W_p [z_id; z_1; ...; z_F] + b_p),
                  z_f = attention pooling of L_u's feature-f set with query e_u
    fusion        G = sigmoid(W1 e_u + W2 s_t + W3 p_u + b),
                  o = (1 - G) * p_u + G * s_t                          (the user vector)
    loss          sampled softmax of o against the next k clicked items (k = 5)

The layers live in models/layers/ (`interest_encoders`, `fusion`, `pooling`,
`feature_embeddings`) so that XDM (models/xdm.py) builds on the same ones. The
feature sets are input_pipeline/sessions.py's: the short-term session is the latest
session before the cut (it is the model's `History`, so batches are bucketed by
session length and the LSTM runs over as few padded steps as possible), the
long-term behaviors the events before it inside the lookback window; both are
documented there.

Choices where the paper (as summarized) is silent, or which this data needs:
- Items are scored against their id embedding only, the same table as the input id
  embedding (XDM eq 2 scores h^T q_i with the input embedding q_i; side features
  enter the inputs only). Every field embedding has `embedding_dim` entries, so an input
  item has (1 + F) * embedding_dim (XDM 4.3: "all types of behaviors were embedded to
  vectors with the same size").
- A field with several values on one item (a film's genres) enters the item's input
  as the mean of their embeddings; in the long-term sets every (behavior, value) pair
  is one element of that field's set, so a genre seen often weighs more.
- The long-term sets are the item ids and one set per item-feature field of the data
  set (category, brand, tag, genre, attribute, ...). The pooling attention is the dot
  product with e_u, as the short-term user attention; an empty set pools to zero.
- e_u: the profile fields (age, gender, occupation, ...) as mean embeddings per field,
  concatenated, dense layer with tanh to `embedding_dim` (the dot-product attentions
  need e_u in the same space); without profiles one trainable vector for everyone.
- Session gap: `session_gap` seconds (the paper's 600). Data without timestamps (the
  S3-Rec files) has no time gaps: its sessions are fixed chunks of
  `untimed_session_length` items and its long-term set the `max_long_term_length`
  events before the chunk (no time window).
- Training samples: every prefix of a training timeline with its next `num_labels`
  clicks (`samples.NextK`); each label is one softmax term and an example's loss is
  their mean (`base.Head` default). `num_labels=1` is next-item training (the S3-Rec
  protocol).
- Multi-head self-attention: 4 heads (the notes do not give the number).
- No dropout by default (the paper names none); `dropout` applies to the LSTM outputs
  and the attention weights.
"""

import dataclasses

import tensorflow as tf

from common import names
from input_pipeline import samples
from input_pipeline import sessions
from models import base
from models import registry
from models.layers import embeddings
from models.layers import feature_embeddings
from models.layers import fusion
from models.layers import interest_encoders

# Extra outputs (not served): the parts of the user vector, for analysis and XDM.
SHORT_TERM = "short_term"  # [batch, dim] s_t
LONG_TERM = "long_term"  # [batch, dim] p_u
GATE = "gate"  # [batch, dim] G


@dataclasses.dataclass(frozen=True)
class SDMConfig:
  """SDM hyper-parameters; defaults follow the paper's setting (as XDM section 4.3 uses it).

  Attributes:
    embedding_dim: L_e, the size of every embedding and of the user vector (128).
    max_length: the longest session, in items (50). The session is the model's
      `History` (batches are bucketed by session length).
    session_gap: seconds without a click that end a session (the paper's 10 minutes);
      choose per data set (docs/models.md).
    long_term_window: seconds before the request that the long-term behaviors reach
      back (7 days).
    max_long_term_length: the newest this many long-term behaviors are read.
    untimed_session_length: data without timestamps: sessions are chunks of this many
      items.
    num_heads: heads of the short-term self-attention.
    num_labels: k, the next clicks each training sample predicts (5).
    dropout: dropout of the short-term encoder (0: the paper names none).
    side_features: concatenate the items' side-feature embeddings to their id
      embedding and pool one long-term set per field (when the data set has item
      features).
  """
  embedding_dim: int = 128
  max_length: int = 50
  session_gap: int = 600
  long_term_window: int = 7 * sessions.DAY
  max_long_term_length: int = 50
  untimed_session_length: int = 10
  num_heads: int = 4
  num_labels: int = 5
  dropout: float = 0.0
  side_features: bool = True

  def __post_init__(self):
    for name in ("embedding_dim", "max_length", "max_long_term_length", "untimed_session_length",
                 "num_heads", "num_labels"):
      if getattr(self, name) < 1:
        raise ValueError(f"{type(self).__name__}.{name} must be >= 1, got {getattr(self, name)}.")
    for name in ("session_gap", "long_term_window"):
      if getattr(self, name) < 0:
        raise ValueError(f"{type(self).__name__}.{name} must be >= 0 seconds, got "
                         f"{getattr(self, name)}.")
    if self.embedding_dim % self.num_heads:
      raise ValueError(f"{type(self).__name__}.embedding_dim {self.embedding_dim} must be a "
                       f"multiple of num_heads {self.num_heads}.")
    if not 0 <= self.dropout < 1:
      raise ValueError(f"{type(self).__name__}.dropout must be in [0, 1), got {self.dropout}.")


@registry.register("sdm", SDMConfig)
class SDM(base.RetrievalModel):
  """Short-term session and long-term behaviors, fused by a gate conditioned on the user."""

  def __init__(self, config: SDMConfig, *, data, **kwargs):
    super().__init__(data=data, **kwargs)
    self.config = config
    dim = config.embedding_dim
    self.item_embedding = embeddings.ItemEmbedding(self.num_items, dim, name="item_embedding")
    self.item_fields = None
    if config.side_features and data.num_item_features:
      self.item_fields = feature_embeddings.ItemFieldEmbedding(
          data.item_features, data.item_feature_fields, data.num_item_features, dim,
          name="item_fields")
    self.user_profile = feature_embeddings.UserProfileEmbedding(
        data.user_feature_names, dim, name="user_profile")
    self.short_term = interest_encoders.ShortTermEncoder(dim, config.num_heads, config.dropout,
                                                         name="short_term")
    self.long_term = interest_encoders.LongTermEncoder(dim, name="long_term")
    self.fusion = fusion.GatedFusion(dim, name="fusion")

  # What it reads.

  @property
  def timed(self) -> bool:
    """Whether the data set has real timestamps (else sessions are fixed chunks)."""
    return self.data.has("timestamps")

  def session_rule(self) -> sessions.SessionRule:
    config = self.config
    if self.timed:
      return sessions.SessionRule(gap=config.session_gap, max_length=config.max_length)
    return sessions.SessionRule(gap=None, max_length=config.untimed_session_length)

  def feature_sets(self):
    """The short-term session (the model's `History`), the long-term behaviors and, when
    the data set has them, the user features."""
    config, rule = self.config, self.session_rule()
    feature_sets = [
        sessions.ShortTermSession(rule.max_length, gap=rule.gap),
        sessions.LongTermBehaviors(rule, window=config.long_term_window if self.timed else None,
                                   max_items=config.max_long_term_length)]
    if self.data.num_user_features:
      feature_sets.append(samples.UserFeatures())
    return feature_sets

  def sample_spec(self) -> samples.SampleSpec:
    return samples.SampleSpec(features=tuple(self.feature_sets()),
                              training=samples.NextK(self.config.num_labels))

  # The encoder.

  def item_inputs(self, ids):
    """q_i for the input side: `[...]` ids -> `[..., (1 + F) * dim]`."""
    vectors = self.item_embedding(ids)
    if self.item_fields is None:
      return vectors
    fields = self.item_fields(ids)  # [..., F, dim]
    flat = tf.reshape(fields, tf.concat([tf.shape(ids), [fields.shape[-2] * fields.shape[-1]]], 0))
    return tf.concat([vectors, flat], axis=-1)

  def mean_item_inputs(self, ids):
    """The mean q_i over each row's real items: `[batch, n]` -> `[batch, input_dim]` (0 for
    a row without items), and `[batch]` bool whether it has any.

    Each distinct id of the batch is embedded once and the rows average them with one
    sparse matmul, so no `[batch, n, input_dim]` tensor (or its gradient) is built for
    XDM's 100 unclicked items per user.
    """
    mask = self.item_embedding.padding_mask(ids)
    unique, index = tf.unique(tf.reshape(ids, [-1]), out_idx=tf.int64)
    count = tf.reduce_sum(tf.cast(mask, tf.float32), axis=1, keepdims=True)
    weights = tf.cast(mask, tf.float32) / tf.maximum(count, 1.0)  # [batch, n]
    shape = tf.shape(ids, out_type=tf.int64)
    rows = tf.repeat(tf.range(shape[0]), shape[1])
    average = tf.sparse.reorder(tf.SparseTensor(
        tf.stack([rows, index], axis=1), tf.reshape(weights, [-1]),
        tf.stack([shape[0], tf.size(unique, out_type=tf.int64)])))
    return tf.sparse.sparse_dense_matmul(average, self.item_inputs(unique)), count[:, 0] > 0

  def user_vector(self, features):
    """e_u `[batch, dim]`."""
    batch = tf.shape(features[names.HISTORY_LENGTH])[0]
    return self.user_profile(features.get(names.USER_FEATURES), batch_size=batch)

  def long_term_sets(self, long_term):
    """The long-term sets `(keys, mask, counts)`: the item ids, then one set per
    item-feature field (each row's distinct values, counted)."""
    sets = [(self.item_embedding(long_term), self.item_embedding.padding_mask(long_term), None)]
    if self.item_fields is not None:
      sets += [(values, counts > 0, counts)
               for values, counts in self.item_fields.field_value_sets(long_term)]
    return sets

  def encode(self, features, training=False):
    """Every part of SDM's user vector.

    Args:
      features: a batch with HISTORY (the short-term session), LONG_TERM (and
        USER_FEATURES when the data set has user features).
      training: applies dropout.

    Returns:
      dict: profile e_u, short_term (the `ShortTermEncoder.encode` dict: s_t under
      "interest"), long_term (the `LongTermEncoder.encode` dict: p_u under "interest"),
      gate G and user_vector o, each `[batch, dim]` where it is a vector.
    """
    profile = self.user_vector(features)
    session = features[names.HISTORY]
    short_term = self.short_term.encode(self.item_inputs(session),
                                        self.item_embedding.padding_mask(session), profile,
                                        training=training)
    long_term = self.long_term.encode(self.long_term_sets(features[sessions.LONG_TERM]), profile)
    fused = self.fusion.encode(profile, short_term["interest"], long_term["interest"])
    return {"profile": profile, "short_term": short_term, "long_term": long_term,
            "gate": fused["gate"], "user_vector": fused["fused"]}

  def call(self, features, training=False):
    """Model contract of `models.base`.

    Returns:
      USER_VECTORS `[batch, 1, dim]` = o; SHORT_TERM, LONG_TERM and GATE for analysis;
      with LABELS the head "next_clicks": o against each of the next k clicks.
    """
    encoded = self.encode(features, training=training)
    user_vector = encoded["user_vector"]
    outputs = {names.USER_VECTORS: user_vector[:, tf.newaxis, :],
               SHORT_TERM: encoded["short_term"]["interest"],
               LONG_TERM: encoded["long_term"]["interest"],
               GATE: encoded["gate"]}
    if names.LABELS in features:
      outputs[names.HEADS] = {"next_clicks": base.Head(user_vector, features[names.LABELS])}
    return outputs
