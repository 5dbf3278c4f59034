"""Online half: the BentoML service, request validation, image preprocessing, metrics."""
