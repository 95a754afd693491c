"""SINE: Sparse-Interest Network for Sequential Recommendation (Tan et al., WSDM 2021).

Equation numbers refer to ../shared/papers/sine.md. Notation: a user's history X^u
`[n, D]`, the concept pool C `[L, D]`, K activated intentions.

    eq 1     a = softmax(tanh(X W1) W2),  z = a^T X              self-attentive pooling
    eq 2     s = <C, z>; idx = top-K(s); C^u = C[idx] * sigmoid(s[idx])
    eq 3     P_{k|t} = softmax_k(LN1(X_t W3) . LN2(C^u_k))       intention assignment
    eq 4     P_{t|k} = softmax_t(tanh((X + P) W_{k,1}) W_{k,2})  per-intention attention
    eq 5     phi_k = LN3(sum_t P_{k|t} P_{t|k} X_t)              interest embeddings
    eq 6     X_hat = P C^u; C_apt = LN4(softmax(tanh(X_hat W3') W4)^T X_hat)
    eq 7-8   e = softmax_k(C_apt . phi_k / tau); v = sum_k e_k phi_k
    eq 10-11 L = L_like + lambda * 1/2 (||M||_F^2 - ||diag M||^2), M = cov(C)

Choices where the paper is silent or ambiguous (the authors' TensorFlow code, a fork of
ComiRec, and RecBole's PyTorch port were read to decide):
- Item embeddings are shared between the input X and the output table H of eq 9, as
  in the authors' code (`share_emb=True`) and RecBole.
- Padding is masked in every softmax over positions (eq 1, 4, 6), as the authors' code
  does with its `nbr_mask`; eq 5's sum runs over real items only. RecBole does not
  mask.
- Eq 1 uses the item embeddings without positions (the paper adds positions only in
  eq 4: "the primary difference lies in that ... add extra trainable positional
  embeddings"). Eq 1, 4 and 6 have no bias inside the tanh, as written.
- Eq 3 follows the paper (LayerNorms with trainable gain and bias, then a dot
  product) rather than the authors' code (L2 normalization divided by a temperature of
  0.07). With unit gains the dot product equals D times the correlation of the two
  vectors; the gains learn the sharpness.
- Eq 4 has one W_{k,1} [D, D] and W_{k,2} [D] per activated intention slot k (slot k
  holds the k-th highest scoring prototype), as written and as in RecBole.
- Position embeddings count from the newest item (position 0 = most recent), so the
  most recent item has the same position whatever the history length; SASRec obtains
  the same with right-aligned sequences. The authors' code indexes from the oldest.
- Eq 6 reuses the name W3 for a D x D matrix; it gets its own weights here, as in the
  authors' code (a separate dense layer), since the paper re-declares it as a
  parameter of eq 6. RecBole shares it with eq 3.
- Eq 10: C_bar holds each prototype's mean over its D entries (M is L x L with 1/D),
  as in RecBole. The authors' code regularizes interest similarity instead; we
  follow the paper. The term is added with lambda (eq 11) as the aux loss
  "covariance".
- Served user vector: v^u of eq 8 (one vector per user, the paper's inference); the K
  interests phi_k are returned under `INTERESTS` for analysis only.
"""

import dataclasses

import tensorflow as tf
import tf_keras

from common import names
from input_pipeline import samples
from models import base
from models import losses
from models import registry
from models.layers import attention
from models.layers import embeddings

INTERESTS = "interests"  # [batch, K, D], the phi_k of eq 5 (not served)

# LayerNorm epsilon: small next to the variance of the normalized activations (about
# 1 / D at initialization), so the normalization is not damped.
_LAYER_NORM_EPSILON = 1e-6

# Table 3: (K intentions, L concepts) per data set; D = 128, n = 20, lambda = 0.5 throughout.
PAPER_SETTINGS = {
    "movielens": (4, 50),
    "amazon": (4, 500),
    "taobao": (8, 1000),
    "ularge": (8, 5000),
}


@dataclasses.dataclass(frozen=True)
class SINEConfig:
  """SINE hyper-parameters; defaults are the paper's (Table 3 and its caption).

  Attributes:
    embedding_dim: D, item, position and prototype dimension (128).
    max_length: n, the longest history the model reads (20); longer histories must be
      truncated to their newest items by the sample builder.
    num_interests: K, activated intentions per user (4, Table 3's Amazon row).
    num_prototypes: L, size of the concept pool (500, Table 3's Amazon row).
    temperature: tau of eq 7 (0.1).
    covariance_weight: lambda of eq 11 (0.5).
  """
  embedding_dim: int = 128
  max_length: int = 20
  num_interests: int = 4
  num_prototypes: int = 500
  temperature: float = 0.1
  covariance_weight: float = 0.5

  def __post_init__(self):
    for name in ("embedding_dim", "max_length", "num_interests", "num_prototypes"):
      if getattr(self, name) < 1:
        raise ValueError(f"SINEConfig.{name} must be >= 1, got {getattr(self, name)}.")
    if self.num_interests > self.num_prototypes:
      raise ValueError(f"SINE activates num_interests={self.num_interests} of num_prototypes="
                       f"{self.num_prototypes} concepts; K must not exceed L.")
    if self.temperature <= 0:
      raise ValueError(f"SINEConfig.temperature must be > 0, got {self.temperature}.")


def paper_config(dataset: str, **overrides) -> SINEConfig:
  """The paper's configuration for one of Table 3's data sets, e.g. `paper_config("movielens")`."""
  if dataset not in PAPER_SETTINGS:
    raise ValueError(f"No SINE setting for {dataset!r}; Table 3 has {sorted(PAPER_SETTINGS)}.")
  num_interests, num_prototypes = PAPER_SETTINGS[dataset]
  return SINEConfig(**{"num_interests": num_interests, "num_prototypes": num_prototypes,
                       **overrides})


@registry.register("sine", SINEConfig)
class SINE(base.RetrievalModel):
  """The sparse-interest encoder (section 3.2) and interest aggregation (section 3.3)."""

  def __init__(self, config: SINEConfig, *, data, **kwargs):
    super().__init__(data=data, **kwargs)
    self.config = config
    dim, k = config.embedding_dim, config.num_interests

    def layer_norm(name):
      return tf_keras.layers.LayerNormalization(epsilon=_LAYER_NORM_EPSILON, name=name)

    self.item_embedding = embeddings.ItemEmbedding(self.num_items, dim, name="item_embedding")
    self.position_embedding = embeddings.RecencyPositionEmbedding(
        config.max_length, dim, name="position_embedding")
    self.concept_attention = attention.SelfAttentivePooling(1, name="concept_attention")  # W1, W2
    self.prototypes = self.add_weight(  # C
        name="prototypes", shape=[config.num_prototypes, dim], initializer="glorot_uniform")
    self.assignment_projection = tf_keras.layers.Dense(  # W3
        dim, use_bias=False, name="assignment_projection")
    self.item_norm = layer_norm("item_norm")  # LN1
    self.prototype_norm = layer_norm("prototype_norm")  # LN2
    self.interest_attention = attention.SelfAttentivePooling(  # W_{k,1}, W_{k,2}
        k, name="interest_attention")
    self.interest_norm = layer_norm("interest_norm")  # LN3
    self.intention_attention = attention.SelfAttentivePooling(  # W3', W4
        1, name="intention_attention")
    self.intention_norm = layer_norm("intention_norm")  # LN4

  def sample_spec(self) -> samples.SampleSpec:
    """The history; training on every prefix -> its next item (section 4.1)."""
    return samples.SampleSpec(features=(samples.History(self.config.max_length),),
                              training=samples.AllPrefixes())

  def encode(self, history):
    """Every intermediate of eq 1-8 for a batch of histories.

    Args:
      history: `[batch, seq_len]` int item ids, left-aligned, padded with pad_id;
        seq_len <= max_length.

    Returns:
      A dict of tensors:
        concept_attention `[batch, seq_len]` (a, eq 1), user_concept `[batch, D]`
        (z_u, eq 1), prototype_scores `[batch, L]` (s^u, eq 2), active_prototypes
        `[batch, K]` (idx, eq 2, best first), active_concepts `[batch, K, D]` (C^u,
        eq 2), assignment `[batch, seq_len, K]` (P_{k|t}, eq 3), interest_attention
        `[batch, K, seq_len]` (P_{t|k}, eq 4), interests `[batch, K, D]` (phi_k, eq 5),
        intention_sequence `[batch, seq_len, D]` (X_hat, eq 6), next_intention
        `[batch, D]` (C_apt, eq 6), interest_weights `[batch, K]` (e^u, eq 7),
        user_vector `[batch, D]` (v^u, eq 8).
    """
    config = self.config
    mask = self.item_embedding.padding_mask(history)  # [B, n]
    items = self.item_embedding(history)  # X^u: [B, n, D]

    # Eq 1: self-attentive pooling of the history into the user's concept vector.
    concept_attention = self.concept_attention(items, mask)  # [B, 1, n]
    user_concept = tf.matmul(concept_attention, items)[:, 0, :]  # z_u: [B, D]

    # Eq 2: score all L prototypes, keep the top K, gate each by sigmoid(score).
    prototypes = tf.convert_to_tensor(self.prototypes)
    prototype_scores = tf.matmul(user_concept, prototypes, transpose_b=True)  # s^u: [B, L]
    top_scores, active_prototypes = tf.math.top_k(prototype_scores, k=config.num_interests)
    active_concepts = (tf.gather(prototypes, active_prototypes) *
                       tf.sigmoid(top_scores)[:, :, tf.newaxis])  # C^u: [B, K, D]

    # Eq 3: each position's distribution over the K intentions (normalized dot product).
    projected = self.item_norm(self.assignment_projection(items))  # LN1(X W3): [B, n, D]
    assignment_logits = tf.matmul(projected, self.prototype_norm(active_concepts),
                                  transpose_b=True)  # [B, n, K]
    assignment = attention.softmax(assignment_logits, axis=-1)  # P_{k|t}

    # Eq 4: per-intention attention over positions, on items plus position embeddings.
    interest_attention = self.interest_attention(
        items + self.position_embedding(mask), mask)  # P_{t|k}: [B, K, n]

    # Eq 5: interest k is the P_{k|t} P_{t|k}-weighted sum of the items, normalized.
    weights = tf.transpose(assignment, [0, 2, 1]) * interest_attention  # [B, K, n]
    interests = self.interest_norm(tf.matmul(weights, items))  # phi: [B, K, D]

    # Eq 6: the intention sequence X_hat = P C^u, pooled into the next intention.
    intention_sequence = tf.matmul(assignment, active_concepts)  # [B, n, D]
    intention_attention = self.intention_attention(intention_sequence, mask)  # [B, 1, n]
    next_intention = self.intention_norm(
        tf.matmul(intention_attention, intention_sequence)[:, 0, :])  # C_apt: [B, D]

    # Eq 7-8: attend over the interests with the predicted intention, temperature tau.
    interest_logits = tf.linalg.matvec(interests, next_intention) / config.temperature  # [B, K]
    interest_weights = attention.softmax(interest_logits, axis=-1)  # e^u
    user_vector = tf.linalg.matvec(interests, interest_weights, transpose_a=True)  # v^u: [B, D]

    return {
        "concept_attention": concept_attention[:, 0, :],
        "user_concept": user_concept,
        "prototype_scores": prototype_scores,
        "active_prototypes": active_prototypes,
        "active_concepts": active_concepts,
        "assignment": assignment,
        "interest_attention": interest_attention,
        "interests": interests,
        "intention_sequence": intention_sequence,
        "next_intention": next_intention,
        "interest_weights": interest_weights,
        "user_vector": user_vector,
    }

  def call(self, features, training=False):
    """Model contract of `models.base`.

    Args:
      features: dict with HISTORY `[batch, seq_len]` (and LABELS in training).
      training: unused (SINE has no dropout).

    Returns:
      USER_VECTORS `[batch, 1, D]` = v^u (eq 8), INTERESTS `[batch, K, D]`, AUX_LOSSES
      `{"covariance": lambda * L_c}` (eq 10-11, a scalar) and, with LABELS, the head
      "softmax": v^u against the next item (eq 9).
    """
    del training
    encoded = self.encode(features[names.HISTORY])
    user_vector = encoded["user_vector"]
    covariance = losses.covariance_regularizer(self.prototypes)
    outputs = {
        names.USER_VECTORS: user_vector[:, tf.newaxis, :],
        INTERESTS: encoded["interests"],
        names.AUX_LOSSES: {"covariance": self.config.covariance_weight * covariance},
    }
    if names.LABELS in features:
      outputs[names.HEADS] = {"softmax": base.Head(user_vector, features[names.LABELS])}
    return outputs
