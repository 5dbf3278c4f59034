"""Online half: the BentoML service, request validation, image preprocessing, metrics."""

from sparsity.logs import quiet_tensorflow

__version__ = "0.1.0"
"""The project's version (pyproject.toml's; a test keeps the two equal): the OpenAPI document's info.version."""

quiet_tensorflow()
