"""The OpenAPI document is a contract: a change to it is a decision, never a side effect
(of moving a route, renaming a model, ...). tests/data/openapi.json is the document as
last decided; after a deliberate change, write it anew with

    CC_WRITE_OPENAPI=1 .venv/bin/python -m pytest tests/test_openapi_snapshot.py

and commit it with the change (its diff is the API's change)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from contact_center.app import create_app
from contact_center.settings import Settings

SNAPSHOT = Path(__file__).parent / "data" / "openapi.json"


def test_the_document_is_the_committed_one(tmp_path: Path) -> None:
    document = create_app(Settings(database=str(tmp_path / "never-opened.db"))).openapi()
    text = json.dumps(document, indent=1) + "\n"
    if os.environ.get("CC_WRITE_OPENAPI"):
        SNAPSHOT.write_text(text)
    # As text: the order of paths and fields is the document's too.
    assert text == SNAPSHOT.read_text(), (
        "/openapi.json changed; if that is meant, write tests/data/openapi.json anew "
        "(see this module's docstring) and commit it")
