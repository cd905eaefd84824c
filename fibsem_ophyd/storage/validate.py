"""Validate Bluesky documents against the event-model JSON schemas."""

from __future__ import annotations

from collections.abc import Iterable

from event_model import DocumentNames, schema_validators

__all__ = ["validate_document", "validate_documents"]


def validate_document(name: str, doc: dict) -> None:
    """Validate one document against its event-model schema.

    Parameters
    ----------
    name : str
        Document name (``"start"``, ``"descriptor"``, ``"event"``, ``"stream_resource"``,
        ``"stream_datum"``, ``"stop"``, ...).
    doc : dict
        The document.

    Raises
    ------
    jsonschema.ValidationError
        If the document does not match the schema.
    ValueError
        If ``name`` is not a document name.
    """
    try:
        key = DocumentNames[name]
    except KeyError:
        raise ValueError(f"unknown document name {name!r}") from None
    schema_validators[key].validate(doc)


def validate_documents(docs: Iterable[tuple[str, dict]]) -> int:
    """Validate every ``(name, doc)`` pair; return how many were validated."""
    n = 0
    for name, doc in docs:
        validate_document(name, doc)
        n += 1
    return n
