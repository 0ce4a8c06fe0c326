"""Credentials out of what the product records or prints: the password in a URI's user info
(`postgresql://user:password@host/db` -> `postgresql://user:***@host/db`), a token before an HTTP
host (`https://TOKEN@host`) and password-like query parameters (`?password=...`, `?sslpassword=`),
in one URI or in a whole command line.

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
# A value that is one URI (a config value, a command-line word, `key=` before it allowed): its password
# may also hold spaces, up to the '@' before a host that ends the value or starts its path (not a
# port and a sentence: `http://host:8000 is up; write to ops@example.com`).
_WHOLE = re.compile(
    r"^(?P<head>(?:[\w.+\-]+=)?[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*):(?!\d+\s)(?P<password>[^\n/]*? [^\n/]*?)@"
    r"(?=[^\s@/?#]*(?:[/?#]|$))"
)
# https://TOKEN@host: a bare user info on HTTP(S) and WebSocket URIs is a credential (a token)
_TOKEN = re.compile(r"(?P<head>\b(?:https?|wss?)://)(?P<token>[^\s:/@]+)@(?=[^\s@/?#]*(?:[\s/?#]|$))")
# ?password=..., ?sslpassword=..., ?access_token=... and the like in a query string (psycopg, MySQL, HTTP)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;][A-Za-z_]*?(?:password|passwd|pwd|secret|token|apikey|api_key)[A-Za-z_]*=)(?P<value>[^&;#\s]*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with every credential of a URI in it replaced by ***: the password of its user info
    (with spaces where the text is that one URI), a bare token before the host of an HTTP(S) URI,
    and password-, secret-, token- and key-named query parameters; the user, host and the rest stay."""
    if "://" not in text and "=" not in text:
        return text
    text = _WHOLE.sub(lambda m: f"{m['head']}:{HIDDEN}@", text)
    text = _USERINFO.sub(lambda m: f"{m['head']}:{HIDDEN}@", text)
    text = _TOKEN.sub(lambda m: f"{m['head']}{HIDDEN}@", text)
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
