"""Process settings TensorFlow reads once, when it is first imported.

Every package's `__init__` imports this module, and every entry point imports a
package before TensorFlow, so the settings hold in every job, test and benchmark.
"""

import os

# TFRS and our models need Keras 2 (tf_keras); the switch only works before TensorFlow
# is first imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
