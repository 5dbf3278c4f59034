"""The default model's facts the docs state, read from its card: ``docs/reference/default-model.json``.

The docs never type these figures by hand: the site's pages take them from that file (``docs/hooks.py``), and
``tests/unit/test_docs.py`` checks the README's against it. Write it after training a new default::

    python scripts/default_model_facts.py            # from the store's mnist_cnn:latest
    python scripts/default_model_facts.py --check    # the file against the store's card (exit 1 if they differ)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACTS = ROOT / "docs" / "reference" / "default-model.json"


def facts_of(metadata: dict, tag: str) -> dict:
    """The figures the docs state, from a card (the model's BentoML metadata)."""
    sparsity = metadata["activation_sparsity"]
    return {
        "tag": tag,
        "preset": metadata["provenance"]["preset"],
        "options": metadata["options"],
        "dataset": metadata["dataset"],
        "train_size": metadata["train_size"],
        "test_accuracy": metadata["test_accuracy"],
        "layers": {name: round(value["mean"], 4) for name, value in sparsity.items() if name != "all"},
        "overall": round(sparsity["all"]["mean"], 4),
        "dead_units": {name: round(value, 4) for name, value in metadata["dead_unit_ratio"].items()},
        "typicality_threshold": round(metadata["typicality"]["threshold"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="mnist_cnn:latest")
    parser.add_argument("--check", action="store_true", help="compare with the file instead of writing it")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import bentoml

    from modelstore.audit import latest_tag

    tag = latest_tag("mnist_cnn") if args.tag == "mnist_cnn:latest" else args.tag
    if tag is None:
        print("the model store has no mnist_cnn (make models trains it)", file=sys.stderr)
        return 2
    stored = bentoml.models.get(tag)
    facts = facts_of(stored.info.metadata, str(stored.tag))
    if args.check:
        written = json.loads(FACTS.read_text())
        if written != facts:
            print(f"{FACTS.relative_to(ROOT)} is not {stored.tag}'s card: write it again", file=sys.stderr)
            return 1
        print(f"{FACTS.relative_to(ROOT)} is {stored.tag}'s card")
        return 0
    FACTS.write_text(json.dumps(facts, indent=2) + "\n")
    print(f"wrote {FACTS.relative_to(ROOT)} from {stored.tag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
