"""ScaNN top-k retrieval artifacts built from exported SavedModels."""

import os

# TFRS and our models need Keras 2 (tf_keras); the switch only works if it is set
# before TensorFlow is first imported, and every entry point imports a package first.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
