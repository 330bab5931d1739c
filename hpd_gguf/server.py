"""`hpd-gguf serve`: the engine over HTTP (FastAPI), for callers in any language.

    POST /v1/extract   {"documents": [{"id", "text", "category"?, "attributes"?}, ...],
                        "attributes"?: [...], "stream"?: false}
                       -> {"results": [{"id", "values", "confidence", "error"?}, ...]} in request
                          order; with "stream": true, NDJSON, one result a line as they are ready
    GET  /health       200 once the model is loaded
    GET  /v1/models    the model served
    GET  /metrics      Prometheus text
    GET  /docs         the API, to read and try (FastAPI's)

Every request's documents go to the one engine, so concurrent callers share its decode steps.
A caller that disconnects cancels its job; a full queue answers 429 with Retry-After; a bad
request answers 4xx with {"error": {"message", "document"?, "field"?}}.
"""
from __future__ import annotations

import asyncio
import errno
import json
import math
import re
import secrets
import socket
from typing import Any, Sequence

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .extractor import Extractor
from .jobs import Job, QueueFull
from .schema import Document, Result

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_binding(host: str, api_key: str | None) -> None:
    if host not in LOOPBACK and not api_key:
        raise ValueError(f"binding {host} needs --api-key (only loopback may go without)")


def check_port(host: str, port: int) -> None:
    """Whether `serve` can listen there, found before the model loads rather than after."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as error:
            hint = ": another server there? --port picks another" if error.errno == errno.EADDRINUSE else ""
            raise ValueError(f"cannot listen on {host}:{port} ({error.strerror or error}){hint}") from None


def check_origins(origins: Sequence[str]) -> None:
    """An origin is what a browser sends: scheme://host[:port], nothing after it (or *, any)."""
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ValueError(f"--allow-origin {origin}: an origin is scheme://host[:port] as a browser sends it, "
                             "e.g. http://localhost:3000 (no path, no trailing /)")


class Limits(BaseModel):
    max_body_bytes: int = 8 * 1024 * 1024
    max_documents: int = 1024  # per request
    max_attributes: int = 256  # per document (llama.cpp has 255 sequence ids for branches)


class ExtractRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    documents: list[dict[str, Any]] = Field(min_length=1)
    attributes: list[str] | None = None
    stream: bool = False


def _request_schema() -> dict:
    """The body as /docs shows it (the endpoint parses it itself, to name a bad document's place)."""
    schema = ExtractRequest.model_json_schema()
    schema["properties"]["documents"]["items"] = Document.model_json_schema()
    schema["example"] = {"documents": [{"id": "p01", "text": "Adidas Men's Ultraboost 22, Core Black, Size 10.5 US",
                                        "attributes": ["Brand", "Color", "Size"]}]}
    return schema


class BadRequest(Exception):
    def __init__(self, status: int, message: str, document: int | None = None, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.document, self.field = status, message, document, field

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"message": self.message}
        if self.document is not None:
            error["document"] = self.document
        if self.field is not None:
            error["field"] = self.field
        return JSONResponse({"error": error}, status_code=self.status)


def create_app(extractor: Extractor, model_name: str, api_key: str | None = None,
               limits: Limits | None = None, allow_origins: Sequence[str] = ()) -> FastAPI:
    """The app; `allow_origins`: the web pages (origins) whose scripts may call it, as a browser
    asks (CORS), e.g. a tool of one's own at http://localhost:3000."""
    limits = limits or Limits()
    engine = extractor.engine
    app = FastAPI(title="hpd-gguf", description="Hyper-parallel attribute value extraction")
    if allow_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(allow_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    registry = CollectorRegistry()
    registry.register(_EngineMetrics(extractor))

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, error: BadRequest):
        return error.response()

    async def check_key(request: Request) -> None:
        if api_key:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not secrets.compare_digest(given.encode(), api_key.encode()):
                raise BadRequest(401, "missing or wrong API key (Authorization: Bearer KEY)")

    guarded = [Depends(check_key)]

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models", dependencies=guarded)
    async def list_models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "local",
                                            "mode": extractor.settings.mode}]}

    @app.get("/metrics", dependencies=guarded)
    async def metrics():
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/extract", dependencies=guarded, openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": _request_schema()}}}})
    async def extract(request: Request):
        body = await _read_body(request, limits.max_body_bytes)
        tasks, stream = _parse(body, extractor, limits)
        try:
            job = engine.submit(tasks)
        except QueueFull as full:
            wait = _retry_after(engine, len(tasks))
            return JSONResponse({"error": {"message": f"the queue is full: {full}"}}, status_code=429,
                                headers={"Retry-After": str(wait)})
        watcher = asyncio.create_task(_cancel_on_disconnect(request, job))
        if stream:
            return StreamingResponse(_lines(job, watcher), media_type="application/x-ndjson")
        try:
            results = [_public(r) async for r in job]
        except Exception as error:  # cancelled (the caller left) or the engine failed
            return JSONResponse({"error": {"message": str(error)}}, status_code=500)
        finally:
            watcher.cancel()
            job.cancel()
        return {"results": results}

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"request body of {declared} bytes, the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body over {limit} bytes")
    return bytes(body)


def _parse(body: bytes, extractor: Extractor, limits: Limits) -> tuple[list, bool]:
    """The request's tasks, or BadRequest naming the document and field at fault."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(400, f"invalid JSON: {error}") from None
    try:
        request = ExtractRequest.model_validate(raw)
    except ValidationError as error:
        raise _unprocessable(error) from None
    if len(request.documents) > limits.max_documents:
        raise BadRequest(413, f"{len(request.documents)} documents, at most {limits.max_documents} a request",
                         field="documents")
    if request.attributes is not None:
        _check_names(request.attributes, limits, None)
    tasks, ids = [], set()
    for index, fields in enumerate(request.documents):
        if request.attributes and "attributes" not in fields:
            fields = {**fields, "attributes": request.attributes}
        if isinstance(fields.get("attributes"), list):
            _check_names(fields["attributes"], limits, index)
        try:
            task = extractor.task(Document.model_validate(fields))
        except ValidationError as error:
            raise _unprocessable(error, index) from None
        except ValueError as error:  # no attributes for it anywhere
            raise BadRequest(422, str(error), index, "attributes") from None
        if task.id in ids:
            raise BadRequest(422, f"duplicate id {task.id!r}", index, "id")
        ids.add(task.id)
        tasks.append(task)
    return tasks, request.stream


def _unprocessable(error: ValidationError, document: int | None = None) -> BadRequest:
    """A 422 naming the first invalid field, and its document (given, or from the location)."""
    first = error.errors()[0]
    where = [str(part) for part in first["loc"]]
    if document is None and where[:1] == ["documents"] and len(where) > 1:
        document, where = int(where[1]), where[2:]
    message = first["msg"]
    if not where and first["type"] in ("dict_type", "model_type"):  # a list of documents, or a string, as the body
        message = ("a document is an object: {\"id\": ..., \"text\": ...}" if document is not None
                   else "the body is an object: {\"documents\": [{\"id\": ..., \"text\": ...}, ...]}")
    return BadRequest(422, message, document, ".".join(where) or None)


def _check_names(names: list, limits: Limits, document: int | None) -> None:
    if not names:
        raise BadRequest(422, "must list at least one attribute", document, "attributes")
    if len(names) > limits.max_attributes:
        raise BadRequest(413, f"{len(names)} attributes, at most {limits.max_attributes}", document, "attributes")


def _public(result: Result) -> dict:
    return result.model_dump(exclude_none=True) | {"values": result.values}


async def _lines(job: Job, watcher: asyncio.Task):
    try:
        async for result in job:
            yield json.dumps(_public(result)) + "\n"
    except Exception as error:  # the engine failed: say so on the stream's last line
        yield json.dumps({"error": {"message": str(error)}}) + "\n"
    finally:
        watcher.cancel()
        job.cancel()


async def _cancel_on_disconnect(request: Request, job: Job, every: float = 0.1) -> None:
    while not job.finished:
        if await request.is_disconnected():
            job.cancel()
            return
        await asyncio.sleep(every)


def _retry_after(engine, documents: int) -> int:
    """Seconds until about that many documents' room frees, from the engine's pace."""
    rate = engine.documents_done / engine.busy_seconds if engine.busy_seconds else 1.0
    return max(1, min(60, math.ceil(documents / max(rate, 1e-3))))


class _EngineMetrics:
    """Read at each scrape, from the engine as it is."""

    def __init__(self, extractor: Extractor):
        self.extractor = extractor

    def collect(self):
        engine, stats = self.extractor.engine, self.extractor.stats
        counters = {"documents": ("Documents extracted", engine.documents_done),
                    "values": ("Attribute values extracted", engine.values_done),
                    "tokens": ("Tokens decoded", stats.tokens),
                    "decode_calls": ("llama_decode calls", stats.decode_calls)}
        for name, (help_text, value) in counters.items():
            yield CounterMetricFamily(f"hpd_{name}", help_text, value=value)
        tokens_per_second = stats.tokens / engine.busy_seconds if engine.busy_seconds else 0.0
        kv = engine.kv
        gauges = {"tokens_per_second": ("Tokens decoded per busy second", tokens_per_second),
                  "queue_depth": ("Documents waiting to be admitted", engine.queued),
                  "resident_documents": ("Documents in flight", engine.resident),
                  "kv_free_cells": ("KV cells free for new work", kv.free_cells if kv else 0),
                  "free_sequence_ids": ("Sequence ids free for new work", kv.free_seqs if kv else 0)}
        for name, (help_text, value) in gauges.items():
            yield GaugeMetricFamily(f"hpd_{name}", help_text, value=value)


def serve(extractor: Extractor, model_name: str, host: str = "127.0.0.1", port: int = 8080,
          api_key: str | None = None, log_level: str = "info", allow_origins: Sequence[str] = ()) -> None:
    import uvicorn

    check_binding(host, api_key)
    check_origins(allow_origins)
    uvicorn.run(create_app(extractor, model_name, api_key, allow_origins=allow_origins), host=host, port=port,
                log_level=log_level)
