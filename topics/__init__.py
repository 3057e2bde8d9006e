"""The wire contract: topic names, their configs, and the JSON Schemas of every message.

Users build on these names and shapes, so they change only with a new schema version.
"""
from topics.names import (  # noqa: F401
    UPLOADS,
    HASHES,
    DECISIONS,
    DEAD_LETTER,
    LIVE_FRAMES,
    LIVE_HASHES,
    LIVE_STATE,
    REPORTS,
    ACTIONS,
    HASH_HISTORY,
    TopicSpec,
    all_topics,
)
from topics.schema import SCHEMA_VERSION, SchemaError, validate, load_schema  # noqa: F401
