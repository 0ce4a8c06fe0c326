"""Who may talk to a chief's oracle: those who hold its token.

keras-tuner serves its oracle over plain gRPC with no check: anyone who could reach the port could
create trials, report any score (it became the best trial, which train-final would ship) or take
trials and never end them. The chief now refuses every call that does not carry the search's
token in its metadata (a server interceptor, compared in constant time).

The token is FASHION_ORACLE_TOKEN when set; else the chief makes one and keeps it, readable by its
user only, in work_dir/tuner/<search id>/oracle.token, where workers find it (the multi-machine
recipe shares work_dir already). Local workers are given it in their environment.
"""

from __future__ import annotations

import collections
import hmac
import os
import secrets
from pathlib import Path

import grpc

TOKEN_ENV = "FASHION_ORACLE_TOKEN"
CA_ENV = "FASHION_ORACLE_CA"  # a worker's: the PEM file it trusts for the chief (set from tuner.tls_ca / tls_cert)
METADATA_KEY = "x-fashion-oracle-token"


def token_file(work_dir: Path | str, sid: str) -> Path:
    return Path(work_dir) / "tuner" / sid / "oracle.token"


def chief_token(work_dir: Path | str, sid: str) -> str:
    """FASHION_ORACLE_TOKEN, else the search's token file (made now, mode 0600, if missing)."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = token_file(work_dir, sid)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        token = secrets.token_urlsafe(32)
        handle.write(token)
    return token


def worker_token(work_dir: Path | str, sid: str) -> str | None:
    """FASHION_ORACLE_TOKEN, else the chief's token file in the shared work_dir, else None."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = token_file(work_dir, sid)
    return path.read_text().strip() if path.is_file() else None


REFUSED = (
    "this call carries no valid oracle token: set FASHION_ORACLE_TOKEN to the chief's, or share the "
    "chief's work_dir (it writes tuner/<search id>/oracle.token)"
)


def _refuse(requests, context):
    """A stranger's call: refused at once, its request never read (nothing on the server waits for it)."""
    context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)


class TokenCheck(grpc.ServerInterceptor):
    """Refuses, UNAUTHENTICATED, every call whose metadata does not carry `token`.

    The refusal is decided from the call's metadata, which arrives first, and is a stream-request
    handler: gRPC runs it at once instead of first waiting, on a server thread, for a request
    message (a unary handler would wait, and a client that never sends its request would hold
    that thread for as long as it likes)."""

    def __init__(self, token: str):
        self.token = token.encode()

    def intercept_service(self, continuation, handler_call_details):
        given = dict(handler_call_details.invocation_metadata or ()).get(METADATA_KEY, "")
        if hmac.compare_digest(given.encode(), self.token):
            return continuation(handler_call_details)
        return grpc.stream_unary_rpc_method_handler(_refuse)


class _Details(
    collections.namedtuple(
        "_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class TokenMetadata(grpc.UnaryUnaryClientInterceptor):
    """Adds the token to every call's metadata (a worker's side)."""

    def __init__(self, token: str | None):
        self.token = token

    def intercept_unary_unary(self, continuation, client_call_details, request):
        metadata = list(client_call_details.metadata or [])
        if self.token:
            metadata.append((METADATA_KEY, self.token))
        details = _Details(
            client_call_details.method,
            client_call_details.timeout,
            metadata,
            client_call_details.credentials,
            getattr(client_call_details, "wait_for_ready", None),
            getattr(client_call_details, "compression", None),
        )
        return continuation(details, request)


def server_credentials(cert: str | None, key: str | None) -> grpc.ServerCredentials | None:
    """TLS for the chief's oracle from tuner.tls_cert and tuner.tls_key (None: plain gRPC)."""
    if cert is None or key is None:
        return None
    pair = (Path(key).expanduser().read_bytes(), Path(cert).expanduser().read_bytes())
    return grpc.ssl_server_credentials([pair])


def trusted(cert: str | None, ca: str | None) -> str | None:
    """The PEM file a worker trusts for the chief: tuner.tls_ca, else tls_cert (self-signed)."""
    return ca or cert


def channel(address: str) -> grpc.Channel:
    """A channel to the chief at host:port whose calls carry FASHION_ORACLE_TOKEN, over TLS when
    FASHION_ORACLE_CA names the certificate to trust (both set by tune-worker or the chief)."""
    ca = os.environ.get(CA_ENV)
    if ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(ca).read_bytes())
        base = grpc.secure_channel(address, credentials)
    else:
        base = grpc.insecure_channel(address)
    return grpc.intercept_channel(base, TokenMetadata(os.environ.get(TOKEN_ENV)))
