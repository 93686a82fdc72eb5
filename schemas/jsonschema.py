"""JSON Schema (draft 2020-12) files for producers in other languages.

``python -m schemas.jsonschema`` (or ``tessera schemas export``) rewrites
``schemas/json/``; ``tests/test_schemas.py`` fails when the checked-in files and the code
disagree.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from .codec import EVENT_TYPES
from .topics import TOPICS

JSON_DIR = Path(__file__).resolve().parent / "json"


def event_schema(event_type: str) -> dict:
    cls = EVENT_TYPES[event_type]
    schema = cls.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    # Relative: it resolves against where the file is read from (the repository's
    # schemas/json/, or a copy), to that very file; CloudEvents' ce_dataschema says the same.
    schema["$id"] = f"{event_type}.v{cls.SCHEMA_VERSION}.schema.json"
    schema["x-tessera-key"] = cls.KEY
    schema["x-tessera-schema-version"] = cls.SCHEMA_VERSION
    # event_type and schema_version are required on the wire, whatever the Python defaults.
    schema["required"] = sorted(set(schema.get("required", [])) | {"event_type", "schema_version", "event_id", "event_time"})
    return schema


def topics_index() -> dict:
    return {
        "topic_name_pattern": "<prefix>.<name>.v<version>",
        "default_prefix": "tessera",
        "topics": [
            {
                "name": t.name,
                "version": t.version,
                "key": t.key,
                "partitions": t.partitions,
                "event_types": list(t.event_types),
                "description": t.description,
            }
            for t in TOPICS
        ],
    }


def rendered() -> dict[str, bytes]:
    """File name -> exact file contents, as they should be checked in."""
    opts = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
    out = {f"{et}.v{EVENT_TYPES[et].SCHEMA_VERSION}.schema.json": orjson.dumps(event_schema(et), option=opts)
           for et in sorted(EVENT_TYPES)}
    out["topics.json"] = orjson.dumps(topics_index(), option=opts)
    return out


def export(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = rendered()
    for stale in directory.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    written = []
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in export():
        print(p)
