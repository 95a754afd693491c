"""Name -> model factory registry (`--model=sine`).

Each model file calls `register("name", ConfigClass)` on its Keras model class; the
trainer imports `models.all_models` (which imports every model file) and looks the
name up here. Unknown names get an error listing the registered ones.
"""

import dataclasses
from typing import Callable, Dict, NamedTuple, Type


class Entry(NamedTuple):
  model_class: Type
  config_class: Type


_REGISTRY: Dict[str, Entry] = {}


def register(name: str, config_class: Type) -> Callable[[Type], Type]:
  """Class decorator: registers a model class and its frozen config dataclass."""
  if not dataclasses.is_dataclass(config_class):
    raise TypeError(f"Model {name!r}: config {config_class!r} must be a dataclass.")

  def decorator(model_class: Type) -> Type:
    if name in _REGISTRY:
      raise ValueError(f"Model name {name!r} is already registered to "
                       f"{_REGISTRY[name].model_class.__module__}; names must be unique.")
    _REGISTRY[name] = Entry(model_class, config_class)
    return model_class

  return decorator


def lookup(name: str) -> Entry:
  if name not in _REGISTRY:
    known = ", ".join(sorted(_REGISTRY)) or "(none)"
    raise ValueError(
        f"Unknown model {name!r}. Known models: {known}. A model is known once its file is "
        f"imported by models/all_models.py (and, under Bazel, linked into the binary).")
  return _REGISTRY[name]


def names():
  return sorted(_REGISTRY)
