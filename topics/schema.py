"""Loads the JSON Schemas under topics/schemas and validates messages against them."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import fastjsonschema
import jsonschema
from referencing import Registry, Resource

SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """A message does not satisfy its topic's schema; `path` names the offending field."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    """Load `topics/schemas/<name>.json` (for example "upload", "decision")."""
    text = resources.files("topics").joinpath("schemas", f"{name}.json").read_text()
    return json.loads(text)


SCHEMA_NAMES = ("upload", "signal_value", "provenance", "hashes", "live_hashes", "decision", "dead_letter", "report",
                "action")


@lru_cache(maxsize=None)
def _registry() -> Registry:
    """Schemas refer to each other by their urn:vigil:... $id."""
    resources_ = [Resource.from_contents(load_schema(n)) for n in SCHEMA_NAMES]
    return Registry().with_resources((r.id(), r) for r in resources_)


@lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, registry=_registry())


@lru_cache(maxsize=None)
def _fast(name: str) -> Any:
    """The same schema compiled to Python by fastjsonschema. Every message pays for the check:
    parsing a live frame's hashes took 2.1 ms with jsonschema, 0.26 ms with this. The schemas use
    only draft-07 keywords, so they compile as draft-07."""
    by_id = {load_schema(n)["$id"]: n for n in SCHEMA_NAMES}

    def draft7(n: str) -> dict[str, Any]:
        return {**load_schema(n), "$schema": "http://json-schema.org/draft-07/schema#"}

    return fastjsonschema.compile(draft7(name), handlers={"urn": lambda uri: draft7(by_id[uri])})


def validate(name: str, message: Any) -> None:
    """Raise SchemaError with the first, most relevant problem, or return None.

    A valid message passes the compiled check alone; an invalid one is re-checked by jsonschema,
    the reference, which also gives the clearer error (tests/test_messages.py keeps them agreeing)."""
    try:
        _fast(name)(message)
        return
    except fastjsonschema.JsonSchemaException:
        pass
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(message))
    if error is not None:
        path = "/".join(str(p) for p in error.absolute_path)
        where = f" at '{path}'" if path else ""
        raise SchemaError(f"{error.message}{where}", path)
