"""One script per paper: ``python recipes/glad.py`` in a checkout, ``python -m genprior.recipes.glad``
from an installed wheel."""
