"""The names that stages share: model features, model outputs, export and artifact signatures.

input_pipeline builds features under these keys, models read them and return outputs
under these keys, the trainer and the export read those, and retrieval speaks the
signature names. Each name is defined here once; no stage restates another's string.
"""

# Model features (per-sample tensors that input_pipeline builds; docs/models.md lists
# which feature set emits which).
HISTORY = "history"  # [batch, len] int64 item indices, oldest first, pad_id padded
HISTORY_LENGTH = "history_length"  # [batch] int64 real items in HISTORY
HISTORY_TIMESTAMPS = "history_timestamps"  # [batch, len] int64, aligned with HISTORY
HISTORY_FEEDBACK = "history_feedback"  # [batch, len] float32, aligned with HISTORY
REQUEST_TIME = "request_time"  # [batch] int64: when the recommendation is asked for
UNCLICKED = "unclicked"  # [batch, n] int64 impressed-not-clicked items before the request
UNCLICKED_LENGTH = "unclicked_length"  # [batch] int64
USER_FEATURES = "user_features"  # [batch, n] int64 user feature indices
LABELS = "labels"  # [batch, steps] int64 training targets, pad_id padded
LABEL_WEIGHTS = "label_weights"  # [batch, steps] float32 per-label loss weights
FUTURE = "future"  # [batch, F] int64 the items after a training window's start, newest first
FUTURE_LENGTH = "future_length"  # [batch] int64 real items in FUTURE
EVAL_TARGETS = "eval_targets"  # [batch, T] int64 held-out items of an evaluation user
EVAL_EXCLUDE = "eval_exclude"  # [batch, M] int64 the whole input history (masking)

# Model outputs (the dict `RetrievalModel.call` returns).
USER_VECTORS = "user_vectors"  # [batch, num_vectors, dim]: what serving retrieves with
HEADS = "heads"  # {name: models.base.Head}: softmax heads of the training loss
AUX_LOSSES = "aux_losses"  # {name: tensor}: extra loss terms, already weighted

# Export (trainer/export.py) and artifact (retrieval/) signatures.
SERVING_SIGNATURE = "serving_default"
CANDIDATES_SIGNATURE = "item_embeddings"
# Raw serving inputs: what a request carries, per timeline field the model reads.
RAW_HISTORY = "history"  # string [batch, len] raw item ids, "" pads
RAW_HISTORY_TIMESTAMPS = "history_timestamps"  # int64 [batch, len]
RAW_HISTORY_FEEDBACK = "history_feedback"  # float32 [batch, len]
RAW_IMPRESSIONS = "impressions"  # string [batch, n] raw ids shown, "" pads
RAW_IMPRESSION_TIMESTAMPS = "impression_timestamps"  # int64 [batch, n]
RAW_USER_FEATURES = "user_features"  # string [batch, n] raw feature names, "" pads
RAW_REQUEST_TIME = "request_time"  # int64 [batch]
# Export outputs.
UNKNOWN_ITEMS = "unknown_items"  # int64 [batch]: request ids not in the vocabulary (ignored)
ITEM_IDS = "item_ids"  # string [num_items] (item signature) or [batch, k] (artifact)
EMBEDDINGS = "embeddings"  # float32 [num_items, dim]
ITEM_BIAS = "item_bias"  # float32 [num_items]: added to every dot product
ITEM_COUNTS = "item_counts"  # float32 [num_items]: training counts (the popular fallback)
# Artifact outputs.
SCORES = "scores"  # float32 [batch, k]
POPULAR_FALLBACK = "popular_fallback"  # bool [batch]: no known history, popular items served

# Files inside an export and an artifact.
EXPORT_META_FILE = "assets.extra/export_meta.json"
ARTIFACT_META_FILE = "assets.extra/retrieval_meta.json"
