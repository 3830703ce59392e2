"""The reward server: the RRM behind HTTP, so editor rollouts and the reward can live on different
machines (DESIGN §7), and an OpenAI-compatible chat endpoint, so the RRM (or any local VLM) can
answer the `openai` teacher.

    GET  /health                 {"status": "ok", "model": name, ...batch counters}   (no token needed)
    POST /v1/score               {"items": [{"source_image", "edited_image", "instruction", "principles"?}]}
                                 -> {"results": [{"score", "parse_ok", "principles", "reasoning"}]}
    POST /v1/chat/completions    OpenAI chat.completion (text parts + image_url data URLs)

Run it (binds 127.0.0.1; the bearer token comes from the environment, never from argv)::

    EDITR1_REWARD_TOKEN=secret python -m editr1.serve.app --model runs/rrm --port 8000

or in code: ``uvicorn.run(create_app(model, processor, token="secret"), host="127.0.0.1", port=8000)``.

Images travel as base64 or ``data:image/...;base64,`` URLs. /v1/score requests are batched
across clients (`editr1.serve.batcher`); every model call, chat generations and ``principles_fn``
included, runs on one model thread. Bad input (JSON, base64, image, field, size, count) gets a
4xx with ``{"error": {"message", "type", "code"}}`` (the OpenAI error shape), never a 500.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from editr1.models.processor import encode_batch
from editr1.models.rrm import generate_ids
from editr1.models.tokenizer import ENDOFTEXT, IM_END
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.principles import Principle, generic_principles
from editr1.rrm.scoring import READOUTS, Scored, score
from editr1.serve.batcher import ModelRunner, ScoreBatcher

log = logging.getLogger(__name__)

TOKEN_ENV = "EDITR1_REWARD_TOKEN"
MAX_PRINCIPLES = 32
MAX_TEXT_CHARS = 4000
MAX_QUESTION_CHARS = 500
# Bounds the RRM prompt of one item (instruction + questions), so that no request can make the
# model attend over an enormous prompt.
MAX_PROMPT_CHARS = 8000

PrinciplesFn = Callable[[str, Image.Image], list[Principle]]


# --- request bodies -----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PrincipleIn(_Strict):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    category: str


class ScoreItemIn(_Strict):
    source_image: str
    edited_image: str
    instruction: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    principles: list[PrincipleIn] | None = Field(default=None, min_length=1, max_length=MAX_PRINCIPLES)


class ScoreRequest(_Strict):
    items: list[ScoreItemIn] = Field(min_length=1)


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    url: str


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class ChatRequest(BaseModel):
    """The OpenAI fields this server honours; others (top_p, user, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int = Field(default=1, ge=1)
    seed: int | None = None
    stream: bool = False


# --- images -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLimits:
    """What an uploaded image may be: pixel count (decompression bombs), side ratio (the Qwen
    image processor refuses 200:1 and beyond), images per chat request."""

    max_pixels: int = 4096 * 4096
    max_aspect_ratio: float = 150.0
    max_images_per_request: int = 16


_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,(.*)", re.DOTALL)


def decode_image(value: str, where: str, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """An RGB image from base64 or a ``data:image/...;base64,`` URL; HTTPException(400/422) otherwise."""
    match = _DATA_URL.fullmatch(value)
    if match is None and value.startswith(("data:", "http://", "https://", "file:")):
        raise HTTPException(400, f"{where}: only base64 data:image/...;base64, URLs or plain base64 are accepted")
    payload = match.group(1) if match else value
    try:
        raw = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, f"{where}: not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            if width * height > limits.max_pixels:
                raise HTTPException(422, f"{where}: image is {width}x{height}, more than {limits.max_pixels} pixels")
            if max(width, height) > limits.max_aspect_ratio * min(width, height):
                raise HTTPException(422, f"{where}: image is {width}x{height}, sides more than "
                                         f"{limits.max_aspect_ratio:g}:1")
            return image.convert("RGB")
    except HTTPException:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise HTTPException(400, f"{where}: not a decodable image ({type(exc).__name__})") from None


# --- errors and guards --------------------------------------------------------------------------


def error_response(status: int, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status, headers=headers)


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPException(400, f"the body must be a JSON object, got {type(data).__name__}")
    return data


def _parse(model: type[BaseModel], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, _validation_message(exc)) from None


class BodyLimit:
    """ASGI middleware: 413 when the body is larger than ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                await error_response(400, "bad Content-Length header")(scope, receive, send)
                return
            if too_large:
                await error_response(413, f"request body larger than {self.max_bytes} bytes")(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, f"request body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)


def bearer_auth(token: str | None) -> Callable[[Request], None]:
    """A dependency that checks ``Authorization: Bearer <token>`` (constant-time); no-op without a token."""
    expected = token.encode() if token else None

    def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(401, "missing or wrong bearer token")

    return check


# --- the app ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ChatResult:
    texts: list[str]
    finished: list[bool]
    prompt_tokens: int
    completion_tokens: int


def _principle_results(quad: Quadruple, scored: Scored) -> list[dict[str, Any]]:
    """Each asked principle with the RRM's 0/1 answer for it (matched by question), or None."""
    answers: dict[str, int] = {}
    for question, value in zip(scored.judgement.principle_questions, scored.judgement.principle_scores):
        answers.setdefault(" ".join(question.split()).casefold(), value)
    return [
        {**p.to_dict(), "score": answers.get(" ".join(p.question.split()).casefold())}
        for p in quad.principles
    ]


def create_app(
    model,
    processor,
    *,
    token: str | None = None,
    principles_fn: PrinciplesFn | None = None,
    max_batch: int = 16,
    max_wait_ms: float = 10,
    max_request_bytes: int = 20_000_000,
    max_items: int = 64,
    readout: str = "expected",
    max_new_tokens: int = 256,
    max_chat_tokens: int = 1024,
    max_chat_n: int = 8,
    image_limits: ImageLimits = ImageLimits(),
    model_name: str | None = None,
) -> FastAPI:
    """The reward server app around an in-memory RRM (see the module docstring).

    Scoring is greedy with ``readout`` ("expected" or "parsed") and ``max_new_tokens``;
    ``principles_fn(instruction, source_image)`` writes the checklist of items that carry none
    (default `generic_principles`). Chat requests are capped at ``max_chat_tokens`` new tokens
    and ``max_chat_n`` choices.
    """
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if min(max_batch, max_items, max_request_bytes, max_new_tokens, max_chat_tokens, max_chat_n) < 1:
        raise ValueError("max_batch, max_items, max_request_bytes, max_new_tokens, max_chat_tokens, max_chat_n must be >= 1")
    name = model_name or model.name_or_path or "editr1-rrm"
    runner = ModelRunner()
    model.eval()  # chat generation does not switch modes itself

    def score_quads(quads: list[Quadruple]) -> list[Scored]:
        return score(model, processor, quads, batch_size=max_batch, readout=readout, max_new_tokens=max_new_tokens)

    batcher: ScoreBatcher[Quadruple, Scored] = ScoreBatcher(score_quads, runner, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            runner.close()

    app = FastAPI(title="editr1 reward server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    app.state.batcher = batcher
    auth = [Depends(bearer_auth(token))]

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal server error")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = batcher.stats
        return {"status": "ok", "model": name, "batches": stats.batches, "items": stats.items,
                "largest_batch": stats.largest}

    def build_quads(items: Sequence[ScoreItemIn]) -> list[Quadruple]:
        quads = []
        for i, item in enumerate(items):
            if not item.instruction.strip():
                raise HTTPException(422, f"items.{i}.instruction: empty")
            prompt_chars = len(item.instruction) + sum(len(p.question) for p in item.principles or ())
            if prompt_chars > MAX_PROMPT_CHARS:
                raise HTTPException(422, f"items.{i}: instruction and questions hold {prompt_chars} characters, "
                                         f"more than {MAX_PROMPT_CHARS}")
            source = decode_image(item.source_image, f"items.{i}.source_image", image_limits)
            edited = decode_image(item.edited_image, f"items.{i}.edited_image", image_limits)
            principles: tuple[Principle, ...] = ()
            if item.principles is not None:
                try:
                    principles = tuple(Principle.from_dict(p.model_dump()) for p in item.principles)
                except ValueError as exc:
                    raise HTTPException(422, f"items.{i}.principles: {exc}") from None
            quads.append(Quadruple(Context(f"item{i}", item.instruction, source), edited, principles))
        return quads

    def fill_principles(quads: list[Quadruple]) -> list[Quadruple]:
        filled = []
        for i, quad in enumerate(quads):
            if not quad.principles:
                try:
                    made = (principles_fn or (lambda text, _: generic_principles(text)))(quad.instruction, quad.source)
                except ValueError as exc:
                    raise HTTPException(422, f"items.{i}: no principles could be written: {exc}") from None
                if not made or not all(isinstance(p, Principle) for p in made):
                    raise TypeError(f"principles_fn returned {made!r}, not a non-empty list of Principle")
                quad = Quadruple(quad.context, quad.edited, tuple(made))
            filled.append(quad)
        return filled

    @app.post("/v1/score", dependencies=auth)
    async def score_items(request: Request) -> dict[str, Any]:
        req: ScoreRequest = _parse(ScoreRequest, await _json_body(request))
        if len(req.items) > max_items:
            raise HTTPException(422, f"too many items: {len(req.items)} > {max_items} per request")
        quads = await asyncio.to_thread(build_quads, req.items)
        if principles_fn is not None and any(not q.principles for q in quads):
            quads = await runner.run(fill_principles, quads)  # it may run a model: the model thread
        else:
            quads = fill_principles(quads)
        try:
            scored = await batcher.submit(quads)
        except (ValueError, IndexError, RuntimeError) as exc:
            # the batch failed and so did this request's item alone: the input cannot be scored
            log.warning("scoring failed for a request: %s", exc)
            raise HTTPException(422, f"an item could not be scored: {type(exc).__name__}: {exc}") from None
        return {
            "results": [
                {"score": s.score, "parse_ok": s.parse_ok, "principles": _principle_results(q, s),
                 "reasoning": s.judgement.reasoning}
                for q, s in zip(quads, scored)
            ]
        }

    def chat_inputs(messages: Sequence[ChatMessage]) -> tuple[list[dict[str, Any]], list[Image.Image]]:
        n_images = sum(1 for m in messages if not isinstance(m.content, str) for p in m.content if p.type == "image_url")
        if n_images > image_limits.max_images_per_request:
            raise HTTPException(422, f"too many images: {n_images} > {image_limits.max_images_per_request}")
        out, images = [], []
        for i, message in enumerate(messages):
            parts = [ContentPart(type="text", text=message.content)] if isinstance(message.content, str) else message.content
            content = []
            for j, part in enumerate(parts):
                where = f"messages.{i}.content.{j}"
                if part.type == "text":
                    if part.text is None:
                        raise HTTPException(422, f"{where}: a text part needs 'text'")
                    content.append({"type": "text", "text": part.text})
                else:
                    if part.image_url is None:
                        raise HTTPException(422, f"{where}: an image_url part needs 'image_url'")
                    images.append(decode_image(part.image_url.url, where, image_limits))
                    content.append({"type": "image"})
            out.append({"role": message.role, "content": content})
        return out, images

    def run_chat(messages, images, max_tokens: int, temperature: float, n: int, seed: int | None) -> _ChatResult:
        batch = encode_batch(processor, [messages], [images])
        prompt_tokens = int(batch["attention_mask"].sum())
        limit = model.config.get_text_config().max_position_embeddings
        if prompt_tokens + max_tokens > limit:
            raise HTTPException(400, f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds "
                                     f"the model's context of {limit} tokens")
        out = generate_ids(model, processor, batch, max_tokens, temperature, n, seed if temperature > 0 else None)
        # rows that never emitted a stop token ran into max_tokens (the pad after a stop is a stop id too)
        stop_ids = torch.tensor(processor.tokenizer.convert_tokens_to_ids([IM_END, ENDOFTEXT]))
        finished = torch.isin(out.completion_ids.cpu(), stop_ids).any(dim=1).tolist()
        return _ChatResult(out.texts, finished, prompt_tokens, int(out.completion_mask.sum()))

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat_completions(request: Request) -> dict[str, Any]:
        req: ChatRequest = _parse(ChatRequest, await _json_body(request))
        if req.stream:
            raise HTTPException(400, "stream=true is not supported")
        if req.n > max_chat_n:
            raise HTTPException(422, f"n: at most {max_chat_n}")
        if req.temperature == 0 and req.n > 1:
            raise HTTPException(400, "n > 1 needs temperature > 0 (greedy samples are identical)")
        max_tokens = min(req.max_completion_tokens or req.max_tokens or max_chat_tokens, max_chat_tokens)
        messages, images = await asyncio.to_thread(chat_inputs, req.messages)
        result = await runner.run(run_chat, messages, images, max_tokens, req.temperature, req.n, req.seed)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.model or name,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": text},
                 "finish_reason": "stop" if done else "length", "logprobs": None}
                for i, (text, done) in enumerate(zip(result.texts, result.finished))
            ],
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                      "total_tokens": result.prompt_tokens + result.completion_tokens},
        }

    return app


# --- running it ---------------------------------------------------------------------------------


def serve(
    model_path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "cpu",
    token: str | None = None,
    log_level: str = "info",
    **app_kwargs: Any,
) -> None:
    """Load the RRM at ``model_path`` (`editr1.models.load_rrm`) and serve it with uvicorn until stopped."""
    import uvicorn

    from editr1.models import load_rrm

    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        log.warning("serving on %s without a token: anyone who can reach it can use the model", host)
    model, processor = load_rrm(model_path, device=device)
    app = create_app(model, processor, token=token, model_name=str(model_path), **app_kwargs)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an RRM saved by save_rrm, or a Qwen2.5-VL hub id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--readout", choices=("expected", "parsed"), default="expected")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    serve(args.model, host=args.host, port=args.port, device=args.device, token=os.environ.get(TOKEN_ENV) or None,
          max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, readout=args.readout,
          max_new_tokens=args.max_new_tokens)


if __name__ == "__main__":
    main()
