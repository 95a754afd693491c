"""ScaNN top-k retrieval artifacts built from exported SavedModels."""

from common import environment  # noqa: F401  (Keras 2 for TFRS, before TensorFlow loads)
