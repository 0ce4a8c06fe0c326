"""The Fashion Classification Service: an HTTP API and an upload page around one loaded model.

POST /predict (multipart field `file`, or the raw image as the body), GET /health, GET /version,
GET / (the upload page). The model is loaded once, before the server starts. Uploads are decoded
in parallel; photos that arrive together are classified in one batch (serving/batcher.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartParser

from fashion_exp.data.images import Decoder, header_pixels
from fashion_exp.errors import ImageError, first_line
from fashion_exp.serving.batcher import BatcherStopped, MicroBatcher
from fashion_exp.serving.memory import DecodeBudget, give_back_freed_memory
from fashion_exp.serving.page import INDEX_HTML
from fashion_exp.serving.predict import top_as_json, top_k

STATUS_FOR_KIND = {"empty": 400, "corrupt": 400, "too_large": 413, "not_image": 415, "missing": 400}


class Predictor(Protocol):
    class_names: list[str]
    image_size: int
    interpolation: str
    name: str | None
    version: str | None
    run_id: str | None

    def predict(self, images: np.ndarray, batch_size: int) -> np.ndarray: ...


@dataclass
class ServeSettings:
    """What the app needs of the config (serve.*)."""

    max_upload_bytes: int
    max_image_pixels: int
    top_k: int
    backend: str
    max_batch: int  # serve.max_batch: photos classified in one forward pass
    max_wait_ms: float  # serve.max_wait_ms: how long the first photo of a batch waits for others
    request_timeout_s: float  # serve.request_timeout_s: a photo unanswered by then gets 503
    decoders: int  # serve.decoders (resolved): uploads decoded at once
    max_waiting: int  # serve.max_waiting: uploads waiting for a decoder before 503
    read_timeout_s: float  # serve.read_timeout_s: a body not arrived by then gets 408
    max_requests: int  # serve.max_requests: requests handled at once (GET /health apart)
    decode_budget_bytes: float  # serve.decode_budget_mb: decoding's memory in flight (serving/memory.py)
    decode_bytes_per_value: float  # serve.decode_bytes_per_value: a decode's bytes per pixel and band
    small_share: float  # serve.small_share: the budget's share kept for small uploads

    @classmethod
    def from_config(cls, config, backend: str | None = None) -> ServeSettings:
        """backend: the one serving chose (serve.backend=auto resolves to one); default serve.backend."""
        return cls(
            max_upload_bytes=int(config.serve.max_upload_mb * 2**20),
            max_image_pixels=config.serve.max_image_pixels,
            top_k=config.serve.top_k,
            backend=backend or config.serve.backend,
            max_batch=config.serve.max_batch,
            max_wait_ms=config.serve.max_wait_ms,
            request_timeout_s=config.serve.request_timeout_s,
            decoders=config.serve.decoders or min(os.cpu_count() or 1, config.serve.max_decoders),
            max_waiting=config.serve.max_waiting,
            read_timeout_s=config.serve.read_timeout_s,
            max_requests=config.serve.max_requests,
            decode_budget_bytes=config.serve.decode_budget_mb * 1e6,
            decode_bytes_per_value=config.serve.decode_bytes_per_value,
            small_share=config.serve.small_share,
        )


class _TooLarge(Exception):
    pass


class Busy(Exception):
    """Every decoder is busy and serve.max_waiting uploads already wait for one."""


class ModelFailed(Exception):
    """The model raised on the batch that held this photo (MemoryError, a runtime's error, ...)."""


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


async def _parse_multipart(request: Request, body: bytes):
    """Starlette's multipart parser over the body already read (and size-checked) by _read_limited."""

    async def chunks():
        yield body

    return await MultiPartParser(request.headers, chunks()).parse()


def _error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


async def _upload(request: Request, limit: int, timeout: float) -> bytes | JSONResponse:
    """The photo's bytes (the multipart field `file`, or the raw body; at most `limit` bytes, within
    `timeout` seconds), or the error answer for a body too large or too slow, or a malformed form."""
    try:
        body = await asyncio.wait_for(_read_limited(request, limit), timeout)
    except _TooLarge:
        return _error(413, f"upload larger than the limit of {limit} bytes")
    except TimeoutError:
        return _error(408, f"upload not received within {timeout:g} s (serve.read_timeout_s)")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body
    try:
        form = await _parse_multipart(request, body)
    except Exception as err:  # malformed multipart bodies raise several parser errors
        return _error(400, f"malformed multipart body ({type(err).__name__})")
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        return _error(400, "multipart upload needs an image in the field 'file'")
    return await upload.read()


Classify = Callable[[bytes], Awaitable[dict]]  # photo bytes -> {"category", "top"}; ImageError if unreadable


def _classifier(predictor: Predictor, settings: ServeSettings, batcher: MicroBatcher) -> Classify:
    """Decode a photo in a worker thread, classify it in the batcher's next batch, answer its top k.
    Raises TimeoutError after settings.request_timeout_s, BatcherStopped if the batcher's thread ended."""
    decoder = Decoder(predictor.image_size, predictor.interpolation, settings.max_image_pixels, draft=True)
    k = min(settings.top_k, len(predictor.class_names))
    decoding = asyncio.Semaphore(settings.decoders)  # threads decoding at once
    budget = DecodeBudget(
        settings.decode_budget_bytes, settings.small_share
    )  # and the memory they hold (serving/memory.py)
    held = [0]  # large uploads decoding or waiting to (small ones are bounded by serve.max_requests)

    async def classify(data: bytes) -> dict:
        values = header_pixels(data, decoder.max_pixels, decoder.formats)  # (ImageError: refused from its header)
        cost = values * settings.decode_bytes_per_value
        large = int(not budget.small(cost))
        if large and held[0] >= settings.decoders + settings.max_waiting:
            raise Busy
        held[0] += large
        try:
            async with budget.holding(cost), decoding:
                image = await run_in_threadpool(decoder.decode, data, "upload")
                if large:
                    await run_in_threadpool(give_back_freed_memory)
        finally:
            held[0] -= large
        # on timeout wait_for cancels the future, and the batcher skips it
        try:
            answer = asyncio.wrap_future(batcher.submit(image))
            probabilities = await asyncio.wait_for(answer, settings.request_timeout_s)
        except (TimeoutError, BatcherStopped):
            raise
        except Exception as err:  # noqa: BLE001 - whatever the model raised: the caller gets one line, the service goes on
            raise ModelFailed(
                f"the model failed on this photo's batch ({type(err).__name__}: {first_line(err)})"
            ) from None
        top = top_k(np.asarray(probabilities), predictor.class_names, k)
        return {"category": top[0][0], "top": top_as_json(top)}

    return classify


def _lifespan(batcher: MicroBatcher, image_size: int):
    """Warm the batcher up on one blank photo before the first request; stop it at shutdown."""

    @asynccontextmanager
    async def lifespan(_app):
        await run_in_threadpool(batcher.warm_up, (image_size, image_size, 3))
        yield
        batcher.close()

    return lifespan


def _add_predict(app: FastAPI, predictor: Predictor, settings: ServeSettings, classify: Classify) -> None:
    """POST /predict: one photo in, its category, top k, the model and the time taken out."""

    @app.post("/predict")
    async def predict(request: Request):
        started = time.perf_counter()
        body = await _upload(request, settings.max_upload_bytes, settings.read_timeout_s)
        if isinstance(body, JSONResponse):
            return body
        try:
            answer = await classify(body)
        except ImageError as err:
            return _error(STATUS_FOR_KIND.get(err.kind, 400), str(err))
        except (BatcherStopped, ModelFailed) as err:
            return _error(503, f"{err}; try again later" if isinstance(err, ModelFailed) else str(err), 5)
        except Busy:
            waiting = settings.max_waiting
            return _error(503, f"busy: every decoder is taken and {waiting} uploads wait (serve.max_waiting)", 1)
        except TimeoutError:
            wait = settings.request_timeout_s
            message = f"no answer from the model within {wait:g} s (serve.request_timeout_s); try again later"
            return _error(503, message, 5)
        answer["model"] = {"name": predictor.name, "version": predictor.version, "backend": settings.backend}
        answer["time_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return answer


def _add_pages(app: FastAPI, predictor: Predictor, settings: ServeSettings, batcher: MicroBatcher) -> None:
    """GET /health (503 once the inference thread has ended, or while one batch has run past
    serve.request_timeout_s), GET /version (the model being served) and
    GET / (the upload page)."""

    @app.get("/health")
    def health():
        if not batcher.alive:
            return _error(503, batcher.why_stopped)
        stuck = batcher.stuck_for(settings.request_timeout_s)
        if stuck is not None:  # an orchestrator restarts a model that hangs, not a healthy one that is busy
            limit = settings.request_timeout_s
            return _error(
                503, f"the model has run one batch for {stuck:.0f} s, past {limit:g} s (serve.request_timeout_s)"
            )
        return {"status": "ok"}

    @app.get("/version")
    def version():
        return {
            "name": predictor.name,
            "version": predictor.version,
            "run_id": predictor.run_id,
            "class_names": predictor.class_names,
            "image_size": predictor.image_size,
            "backend": settings.backend,
        }

    @app.get("/", response_class=HTMLResponse)
    def index():
        return INDEX_HTML


def _limit_requests(app: FastAPI, settings: ServeSettings) -> None:
    """At most serve.max_requests requests in the app at once; more get 503 with Retry-After: 1.
    GET /health is never held back: an orchestrator watching it must see a busy service as alive."""
    in_flight = [0]

    @app.middleware("http")
    async def limit(request: Request, call_next):
        if request.url.path == "/health":
            return await call_next(request)
        if in_flight[0] >= settings.max_requests:
            return _error(503, f"busy: {settings.max_requests} requests in progress (serve.max_requests)", 1)
        in_flight[0] += 1
        try:
            return await call_next(request)
        finally:
            in_flight[0] -= 1


def create_app(predictor: Predictor, settings: ServeSettings) -> FastAPI:
    """A FastAPI app that classifies uploaded photos with `predictor`."""
    # one inference thread (the model uses every core already), fed batches of concurrent photos
    batcher = MicroBatcher(
        lambda images: predictor.predict(images, len(images)), settings.max_batch, settings.max_wait_ms
    )
    title, version = "Fashion Classification Service", str(predictor.version or "local")
    app = FastAPI(title=title, version=version, lifespan=_lifespan(batcher, predictor.image_size))
    _add_predict(app, predictor, settings, _classifier(predictor, settings, batcher))
    _add_pages(app, predictor, settings, batcher)
    _limit_requests(app, settings)
    return app
