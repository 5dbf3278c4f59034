"""The pieces every part of the API document is made of: references, JSON content, and named schemas generated
from pydantic models."""

from __future__ import annotations

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF_TEMPLATE = "#/components/schemas/{model}"


def ref(name: str) -> dict:
    return {"$ref": REF_TEMPLATE.format(model=name)}


def json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def answer(description: str, schema: str | None = None) -> dict:
    """A response: ``description``, with a JSON body of the named schema."""
    return {"description": description} | ({"content": json_content(ref(schema))} if schema else {})


def schemas_of(models: tuple[type[BaseModel], ...], mode: str = "serialization") -> dict[str, dict]:
    """The named schemas of ``models`` and of every model they use, as components (OpenAPI 3.0 forms are made
    later, for the whole document)."""
    _, top = models_json_schema([(model, mode) for model in models], ref_template=REF_TEMPLATE)
    return dict(top.get("$defs", {}))
