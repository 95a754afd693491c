"""Keras retrieval models, one per file, registered by name in `models.registry`."""

from common import environment  # noqa: F401  (Keras 2 for TFRS, before TensorFlow loads)
