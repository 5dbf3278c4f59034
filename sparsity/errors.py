"""Errors raised by the core for input that must not be counted."""


class InvalidInputError(ValueError):
    """Input refused by the core: wrong shape, non-finite or out-of-range values.

    ``field`` names the offending input so callers can build a clear 4xx message.
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
