"""Credentials out of what the product records or prints: the password in a URI's user info
(`postgresql://user:password@host/db` -> `postgresql://user:***@host/db`) and password-like query
parameters (`?password=...`), in one URI or in a whole command line.

Only what is written down (lock files, MLflow params and tags, messages) passes through here; the
URI a command connects with is never changed. A shared piece: it imports nothing of the package.
"""

from __future__ import annotations

import re
from typing import Any

HIDDEN = "***"

# scheme://user:password@host. The user has no ':', '/' or '@'. The password may hold '/', ':' or
# '@' unencoded (SQLAlchemy and requests take such URIs), so it runs to the last '@' before the host:
# the '@' after which no other '@' comes before the path, query, fragment or the word's end.
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):(?P<password>\S*?)@(?=[^\s@/?#]*(?:[\s/?#]|$))")
# ?password=... and the like in a query string (psycopg, MySQL and HTTP URIs take them)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey)=)(?P<value>[^&;#\s]*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with the password of every URI in it replaced by ***; the user, host and the rest stay."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{HIDDEN}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{HIDDEN}" if m["value"] else m[0], text)


def redact_words(words: list[str]) -> list[str]:
    """A command line (argv) with every word redacted on its own (a quoted word may hold spaces)."""
    return [redact(word) for word in words]


def redact_values(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with every string in it redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(item) for item in value]
    return value
