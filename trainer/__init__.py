"""Training, evaluation and export of the registered models under tf.distribute."""

from common import environment  # noqa: F401  (Keras 2 for TFRS, before TensorFlow loads)
