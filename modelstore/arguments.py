"""Argument types shared by the command lines (``python -m modelstore``, ``training``, ``lab``): each checks one
rule and names it."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_REPORT_DIR = Path(__file__).resolve().parent.parent / "reports"


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _at_most_one(parse, interval: str):
    """An argparse type: ``parse``, then at most 1 (``interval`` names the range in the message)."""

    def parse_fraction(text: str) -> float:
        value = parse(text)
        if value > 1:
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value

    return parse_fraction


density = _at_most_one(positive_float, "(0, 1]")
share = _at_most_one(non_negative_float, "[0, 1]")


def list_of(parse, choices: tuple[str, ...] | None = None):
    """An argparse type: a comma-separated list, each item parsed by ``parse`` (or one of ``choices``)."""

    def parse_list(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list with at least one item")
        if choices is not None:
            bad = [item for item in items if item not in choices]
            if bad:
                raise argparse.ArgumentTypeError(f"{', '.join(bad)} not among {', '.join(choices)}")
            return items
        return [parse(item) for item in items]

    return parse_list
