"""The served models a run compares: ``--server [LABEL=]URL``, each labelled for the tables and records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from yarn_cli.errors import InputError


@dataclass(frozen=True)
class Endpoint:
    """One served model to test: ``--server [LABEL=]URL``."""

    label: str
    url: str


def parse_endpoints(values: Sequence[str]) -> list[Endpoint]:
    """``[LABEL=]URL`` each; labels default to host:port and must differ, as they name the table's columns."""
    endpoints = []
    for value in values:
        label, sep, url = value.partition("=")
        if not sep or "://" in label:
            label, url = "", value
        url = url.strip()
        label = label.strip() or urlsplit(url).netloc or url
        endpoints.append(Endpoint(label, url))
    labels = [e.label for e in endpoints]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InputError(
            f"two --server values share the label {repeated[0]!r}; name them: --server orig=URL --server yarn=URL"
        )
    return endpoints
