"""Methods that train the generator itself into a dataset (DiM, ...), and their loop (``train``)."""
from . import dcgm, dim, minimax  # noqa: F401  (registers the methods)
from .base import GENERATOR_METHODS, GeneratorMethod, create_method, list_methods

__all__ = ["GENERATOR_METHODS", "GeneratorMethod", "create_method", "list_methods"]
