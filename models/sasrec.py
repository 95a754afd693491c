"""SASRec: Self-Attentive Sequential Recommendation (Kang and McAuley, ICDM 2018).

The baseline the DSS model builds on. Section numbers refer to the paper.

    E = M_s * sqrt(d) + P                          embedding layer (III-B)
    F = LN(Block^B(Dropout(E)))                    causal self-attention blocks (III-C)
    r_{i,t} = F_t . M_i                            prediction layer, shared item embedding (III-E)

Training (III-F) predicts the next item at every position of the history at once:
`samples.AllPositions` cuts each training timeline into windows of `max_length` and
labels each position with the item that follows it, so one forward pass scores every
training prefix and each prefix is one term of the loss. The loss is the trainer's
softmax head (full softmax over the catalog, or sampled negatives with the logQ
correction), not the paper's one negative per positive: a softmax over many
negatives is what the strongest published results on these data sets train with
(../shared/BENCHMARKS.md). The served user vector is F at the newest item.

Choices where the paper is silent:
- Item embeddings are scaled by sqrt(d) before positions are added, as in the
  authors' code.
- Positions count from the newest item (`RecencyPositionEmbedding`), equal to the
  paper's right-aligned windows.
- Residual blocks follow the paper's g(x) = x + Dropout(g(LayerNorm(x))) (the
  authors' code normalizes only the attention queries); a final LayerNorm as in the
  authors' code.
"""

import dataclasses

from common import names
from input_pipeline import samples
from models import base
from models import registry
from models.layers import embeddings
from models.layers import sequence_encoders


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
  """SASRec hyper-parameters; defaults follow the paper for sparse data (section IV-B).

  Attributes:
    embedding_dim: d (the paper's 50; 64 as RecBole and the S3-Rec protocol).
    max_length: n, the longest history (50 for the Amazon data sets).
    num_blocks: b, self-attention blocks (2).
    num_heads: attention heads (1 in the paper).
    dropout: dropout rate of embeddings, attention weights and blocks (0.5 for the
      sparse Amazon data sets, 0.2 for MovieLens-1M).
  """
  embedding_dim: int = 64
  max_length: int = 50
  num_blocks: int = 2
  num_heads: int = 1
  dropout: float = 0.5

  def __post_init__(self):
    for name in ("embedding_dim", "max_length", "num_blocks", "num_heads"):
      if getattr(self, name) < 1:
        raise ValueError(f"SASRecConfig.{name} must be >= 1, got {getattr(self, name)}.")
    if self.embedding_dim % self.num_heads:
      raise ValueError(f"SASRecConfig.embedding_dim {self.embedding_dim} must be a multiple of "
                       f"num_heads {self.num_heads}.")
    if not 0 <= self.dropout < 1:
      raise ValueError(f"SASRecConfig.dropout must be in [0, 1), got {self.dropout}.")


@registry.register("sasrec", SASRecConfig)
class SASRec(base.RetrievalModel):
  """Causal self-attention over the history; one user vector per position."""

  def __init__(self, config: SASRecConfig, *, data, **kwargs):
    super().__init__(data=data, **kwargs)
    self.config = config
    self.item_embedding = embeddings.ItemEmbedding(self.num_items, config.embedding_dim,
                                                   name="item_embedding")
    self.encoder = sequence_encoders.CausalSelfAttentionEncoder(
        config.embedding_dim, config.max_length, config.num_blocks, config.num_heads,
        config.dropout, name="encoder")

  def sample_spec(self) -> samples.SampleSpec:
    return samples.SampleSpec(features=(samples.History(self.config.max_length),),
                              training=samples.AllPositions())

  def encode(self, history, training=False):
    """`[batch, len]` item ids -> `[batch, len, d]`: F_t encodes the prefix ending at t."""
    mask = self.item_embedding.padding_mask(history)
    return self.encoder(self.item_embedding(history), mask, training=training)

  def call(self, features, training=False):
    """Model contract of `models.base` (`base.per_position_outputs`): USER_VECTORS is F
    at the newest item; in training the head "next_item" scores F at every position."""
    return base.per_position_outputs(self.encode(features[names.HISTORY], training=training),
                                     features)
