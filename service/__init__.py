"""Online half: the BentoML service, request validation, image preprocessing, metrics."""

import os

__version__ = "0.1.0"
"""The project's version (pyproject.toml's; a test keeps the two equal): the OpenAPI document's info.version."""

# TensorFlow's C++ start-up lines (absl's "All log messages before absl::InitializeLog()", the CPU
# feature notice) are not in the service's log format: keep them out unless the user asks for them.
if not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):  # unset or empty
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
