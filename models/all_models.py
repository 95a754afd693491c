"""Imports every model file so that each registers its name in `models.registry`.

The trainer imports this module, then looks `--model` up in the registry. A new
model is one new file plus one import line here.
"""

from models import dss  # noqa: F401  (registers "dss")
from models import gru4rec  # noqa: F401  (registers "gru4rec")
from models import hrnn_meta  # noqa: F401  (registers "hrnn_meta")
from models import sasrec  # noqa: F401  (registers "sasrec")
from models import sdm  # noqa: F401  (registers "sdm")
from models import sine  # noqa: F401  (registers "sine")
from models import xdm  # noqa: F401  (registers "xdm")
