"""Raw logs -> TFRecord user timelines -> tf.data model inputs."""

from common import environment  # noqa: F401  (Keras 2 for TFRS, before TensorFlow loads)
