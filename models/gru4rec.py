"""GRU4Rec: session-based recommendations with recurrent neural networks (Hidasi et al., ICLR 2016).

The baseline HRNN-meta builds on. A GRU reads the history item by item (section 3.1,
eq. 2-5); its hidden state after each item, projected to the item embedding size,
scores every item by a dot product with the item embeddings:

    h_t = GRU(h_{t-1}, Dropout(M_{s_t})),   o_t = W h_t + b,   r_{i,t} = o_t . M_i

Training predicts the next item at every position at once (`samples.AllPositions`,
the paper's session-parallel next-event prediction over whole sequences), with the
trainer's softmax head (full softmax, or sampled negatives with logQ correction), as
RecBole trains it, rather than the paper's TOP1/BPR ranking losses over in-batch
negatives. The served user vector is o at the newest item.

Choices where the paper is silent or differs by implementation:
- Item embeddings as GRU input and shared with the output layer (RecBole; the paper
  feeds one-hot vectors and found embeddings no better on its data).
- One GRU layer of 128 units and dropout 0.3 on the embeddings by default (RecBole's
  defaults; the paper used 100 units and dropout 0.5 on hidden layers).
"""

import dataclasses

from common import names
from input_pipeline import samples
from models import base
from models import registry
from models.layers import embeddings
from models.layers import sequence_encoders


@dataclasses.dataclass(frozen=True)
class GRU4RecConfig:
  """GRU4Rec hyper-parameters.

  Attributes:
    embedding_dim: item embedding size (64).
    max_length: the longest history read (50).
    hidden_dim: GRU units (128).
    num_layers: stacked GRU layers (1).
    dropout: dropout rate on the input embeddings (0.3).
  """
  embedding_dim: int = 64
  max_length: int = 50
  hidden_dim: int = 128
  num_layers: int = 1
  dropout: float = 0.3

  def __post_init__(self):
    for name in ("embedding_dim", "max_length", "hidden_dim", "num_layers"):
      if getattr(self, name) < 1:
        raise ValueError(f"GRU4RecConfig.{name} must be >= 1, got {getattr(self, name)}.")
    if not 0 <= self.dropout < 1:
      raise ValueError(f"GRU4RecConfig.dropout must be in [0, 1), got {self.dropout}.")


@registry.register("gru4rec", GRU4RecConfig)
class GRU4Rec(base.RetrievalModel):
  """A GRU over the history; one user vector per position."""

  def __init__(self, config: GRU4RecConfig, *, data, **kwargs):
    super().__init__(data=data, **kwargs)
    self.config = config
    self.item_embedding = embeddings.ItemEmbedding(self.num_items, config.embedding_dim,
                                                   name="item_embedding")
    self.encoder = sequence_encoders.GRUEncoder(config.embedding_dim, config.hidden_dim,
                                                config.num_layers, config.dropout,
                                                name="encoder")

  def sample_spec(self) -> samples.SampleSpec:
    return samples.SampleSpec(features=(samples.History(self.config.max_length),),
                              training=samples.AllPositions())

  def call(self, features, training=False):
    """Model contract of `models.base` (`base.per_position_outputs`): USER_VECTORS is o
    at the newest item; in training the head "next_item" scores o at every position."""
    history = features[names.HISTORY]
    sequence = self.encoder(self.item_embedding(history),
                            self.item_embedding.padding_mask(history), training=training)
    return base.per_position_outputs(sequence, features)
