"""The HTTP API (FastAPI): OpenAI-style completions, classify and embeddings, and the playground page.

``create_app(run)`` loads nothing from request data: the run is fixed when the app is built, and no
endpoint reads or writes files. Bad input is answered with a 4xx OpenAI error object naming the field
(``{"error": {"message", "type", "param"}}``); a full queue with 503; a request past its deadline with 504.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qkv.generation import LogitsSettings
from qkv.recipes.run import LoadedRun, load_run
from qkv.serve.backends import BadRequest, EncoderBackend, GenerativeBackend, backend_for
from qkv.serve.channel import Channel
from qkv.serve.engine import Call, Engine, QueueFull
from qkv.serve.page import playground_html
from qkv.serve.responses import Completion, error_body, sse
from qkv.serve.schemas import AttentionRequest, CompletionRequest, TextsRequest
from qkv.serve.wave import Row

__all__ = ["create_app"]

MAX_BODY_BYTES = 1 << 20


def _error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else ("server_busy" if status == 503 else "server_error")
    return JSONResponse(error_body(message, param, kind), status_code=status)


_FIELDS = set(CompletionRequest.model_fields) | set(AttentionRequest.model_fields) | set(TextsRequest.model_fields)


def _param(error: dict[str, Any]) -> str:
    """The request field of a validation error: its location without union-member tags (``bool``, ``int``...)."""
    loc = [x for x in error.get("loc", ()) if x != "body"]
    keep = [str(x) for i, x in enumerate(loc) if isinstance(x, int) or x in _FIELDS
            or (i == len(loc) - 1 and error.get("type") == "extra_forbidden")]
    return ".".join(keep) or "body"


def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = max(errors, key=lambda e: len(e.get("loc", ())))  # the deepest: inside a union, the closest member
    if first.get("type") == "json_invalid":
        return _error(400, f"the body is not valid JSON: {first.get('msg')}", "body")
    param = _param(first)
    got = first.get("input")
    shown = repr(got)[:80] if first.get("type") != "missing" else "nothing"
    return _error(400, f"{param}: {first.get('msg')} (got {shown})", param)


def _install_errors(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(BadRequest, lambda _, e: _error(e.status, e.message, e.param))
    app.add_exception_handler(QueueFull, lambda _, e: _error(503, str(e)))
    app.add_exception_handler(StarletteHTTPException, lambda _, e: _error(e.status_code, str(e.detail)))

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > MAX_BODY_BYTES):
            return _error(413, f"request body too large ({size} bytes; at most {MAX_BODY_BYTES})", "body")
        return await call_next(request)


def _check_model(name: str, asked: str | None) -> None:
    if asked is not None and asked != name:
        raise BadRequest("model", f"model {asked!r} is not served here; this server has {name!r}", 404)


def _check_attention(backend: GenerativeBackend, att: AttentionRequest | None, beams: int) -> dict[str, Any] | None:
    if att is None:
        return None
    if beams > 1:
        raise BadRequest("return_attention", "return_attention is not available with num_beams > 1")
    n = backend.num_layers()
    if not -n <= att.layer < n:
        raise BadRequest("return_attention.layer", f"layer must lie in [-{n}, {n}), got {att.layer}")
    heads = 1 if hasattr(backend.model, "decode_step") else int(getattr(backend.run.config, "num_heads", 1))
    if isinstance(att.head, int) and not 0 <= att.head < heads:
        raise BadRequest("return_attention.head", f"head must lie in [0, {heads}) or be 'mean'/'all', got {att.head}")
    return {"layer": att.layer % n, "head": att.head, "kind": "cross" if backend.cross else "self"}


class _Server:
    """The state behind the routes: the run, its backend, the engine and the per-request timeout."""

    def __init__(self, run: LoadedRun, engine: Engine, name: str, timeout: float) -> None:
        self.run, self.engine, self.name, self.timeout = run, engine, name, timeout
        self.backend = engine.backend

    def generative(self) -> GenerativeBackend:
        if not isinstance(self.backend, GenerativeBackend):
            raise BadRequest(None, f"{self.name} is an encoder ({self.run.task}); use /v1/classify or /v1/embeddings")
        return self.backend

    def encoder(self) -> EncoderBackend:
        if not isinstance(self.backend, EncoderBackend):
            raise BadRequest(None, f"{self.name} is a {self.run.task} model; it cannot classify or embed "
                                   "(use /v1/completions)")
        return self.backend

    def submit_completion(self, body: CompletionRequest, channel: Channel) -> dict[str, Any] | None:
        backend = self.generative()
        _check_model(self.name, body.model)
        prepared = backend.prepare(body.prompt, body.max_tokens)
        att = _check_attention(backend, body.attention(), body.num_beams)
        if att is not None:
            att["keys"] = prepared.key_labels
        deadline = time.monotonic() + self.timeout
        if body.num_beams > 1:
            self.engine.submit(Call(lambda: _beam_events(backend, prepared, body.num_beams), channel, deadline,
                                    events=True))
            return att
        settings = LogitsSettings(temperature=body.temperature or 1.0, top_k=body.top_k, top_p=body.top_p)
        seed = body.seed if body.seed is not None else int.from_bytes(os.urandom(6), "little")
        self.engine.submit(Row(prepared, settings, greedy=body.temperature == 0.0, seed=seed, channel=channel,
                               deadline=deadline, logprobs=body.logprobs, attention=body.attention()))
        return att


def _beam_events(backend: GenerativeBackend, prepared, num_beams: int) -> list[dict[str, Any]]:
    tokens = backend.beam(prepared, num_beams)
    if backend.eos_id in tokens:
        tokens = tokens[: tokens.index(backend.eos_id) + 1]
    text = backend.tokenizer.decode(tokens)
    events: list[dict[str, Any]] = [{"text": text if i == 0 else "", "token": t, "label": backend.label(t)}
                                    for i, t in enumerate(tokens)]
    reason = "stop" if tokens and tokens[-1] == backend.eos_id else "length"
    n = len(prepared.ids)
    return events + [{"finish_reason": reason, "usage": {"prompt_tokens": n, "completion_tokens": len(tokens),
                                                         "total_tokens": n + len(tokens)}}]


async def _events(channel: Channel, request: Request, timeout: float) -> AsyncIterator[dict[str, Any]]:
    """The request's events until it finishes; stops early (closing the channel) if the client leaves."""
    end = time.monotonic() + timeout + 5.0  # the engine enforces the deadline; this only guards a stuck engine
    try:
        while True:
            try:
                event = await channel.get(timeout=0.25)
            except asyncio.TimeoutError:
                if await request.is_disconnected() or time.monotonic() > end:
                    return
                continue
            for e in event.get("events", [event]):
                yield e
                if "finish_reason" in e or "error" in e or "result" in e:
                    return
    finally:
        channel.closed.set()


def _failure(event: dict[str, Any], timeout: float) -> tuple[int, str, str | None] | None:
    if "error" in event:
        e = event["error"]
        return e.status, e.message, e.param
    if event.get("finish_reason") == "timeout":
        return 504, f"the request did not finish within the server's timeout ({timeout:g}s)", None
    return None


def _routes(app: FastAPI, server: _Server) -> None:
    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        backend = server.backend
        cross = isinstance(backend, GenerativeBackend) and backend.cross
        max_tokens = min(40, backend.max_tokens) if isinstance(backend, GenerativeBackend) else 1
        return HTMLResponse(playground_html(server.name, server.run.task, cross=cross, max_tokens=max_tokens))

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        entry = {"id": server.name, "object": "model", "created": int(server.run.path.stat().st_mtime),
                 "owned_by": "qkv", "task": server.run.task, "family": type(server.run.config).__name__}
        return {"object": "list", "data": [entry]}

    @app.get("/v1/stats")
    async def stats() -> dict[str, Any]:
        return server.engine.snapshot()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        channel = Channel(asyncio.get_running_loop())
        att = server.submit_completion(body, channel)
        done = Completion(server.name, att, body.logprobs is not None)
        events = _events(channel, request, server.timeout)
        if body.stream:
            return StreamingResponse(_stream(done, events, server.timeout), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        async for event in events:
            failed = _failure(event, server.timeout)
            if failed:
                return _error(*failed)
            done.add(event)
        if done.finish_reason is None:
            return _error(504, "the request did not finish (client gone or engine stuck)")
        return done.body()

    @app.post("/v1/classify")
    async def classify(body: TextsRequest, request: Request):
        backend = server.encoder()
        _check_model(server.name, body.model)
        result = await _call(server, request, backend.classify, _texts(body))
        return {"object": "list", "model": server.name, "data": result}

    @app.post("/v1/embeddings")
    async def embeddings(body: TextsRequest, request: Request):
        backend = server.encoder()
        _check_model(server.name, body.model)
        texts = _texts(body)
        vectors = await _call(server, request, backend.embed, texts)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        n = sum(len(backend.tokenizer.encode(t)) for t in texts)
        return {"object": "list", "model": server.name, "data": data, "usage": {"prompt_tokens": n, "total_tokens": n}}


def _texts(body: TextsRequest) -> list[str]:
    try:
        return body.texts()
    except ValueError as e:
        raise BadRequest("input", str(e)) from e


async def _call(server: _Server, request: Request, fn, texts: list[str]) -> Any:
    channel = Channel(asyncio.get_running_loop())
    server.engine.submit(Call(lambda: fn(texts), channel, time.monotonic() + server.timeout))
    async for event in _events(channel, request, server.timeout):
        failed = _failure(event, server.timeout)
        if failed:
            raise BadRequest(failed[2], failed[1], failed[0])
        return event["result"]
    raise BadRequest(None, "the request did not finish", 504)


async def _stream(done: Completion, events: AsyncIterator[dict[str, Any]], timeout: float) -> AsyncIterator[bytes]:
    first = True
    async for event in events:
        failed = _failure(event, timeout)
        if failed:
            yield sse(error_body(failed[1], failed[2], "server_error" if failed[0] >= 500 else "invalid_request_error"))
            break
        yield sse(done.chunk(event, first))
        first = False
    yield sse("[DONE]")


def create_app(
    run: str | os.PathLike | LoadedRun,
    *,
    max_batch: int = 16,
    queue_size: int = 64,
    timeout: float = 60.0,
    batch_wait: float = 0.01,
    device: str = "cpu",
    name: str | None = None,
) -> FastAPI:
    """The qkv HTTP app for one trained run.

    Args:
        run: a run or checkpoint directory, or a run already loaded with :func:`~qkv.recipes.load_run`.
        max_batch: most completion requests decoded together (per-step batching).
        queue_size: most requests waiting to start; more are answered 503.
        timeout: seconds a request may take from arrival to its last token (then 504 / an error event).
        batch_wait: the longest a new batch waits for the previous batch's clients to come back (seconds).
        device: where to load the model (when ``run`` is a path).
        name: the model id in responses (default: the run directory's name).

    Returns:
        A FastAPI app; its lifespan starts and stops the engine thread (``app.state.engine``).
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    loaded = run if isinstance(run, LoadedRun) else load_run(run, device=device)
    engine = Engine(backend_for(loaded), max_batch=max_batch, queue_size=queue_size, batch_wait=batch_wait)
    base = Path(run) if not isinstance(run, LoadedRun) else loaded.path
    if base.name in ("best", "latest", "averaged") or base.name.startswith("step_"):
        base = base.parent
    server = _Server(loaded, engine, name or base.resolve().name, timeout)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="qkv serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    _install_errors(app)
    _routes(app, server)
    return app
