"""The `openai` teacher: any OpenAI-compatible chat endpoint (vLLM, SGLang, a hosted API, or
editr1's own reward server) writes principles, candidate RRM traces and verifier labels (DESIGN §5).

    from editr1.teachers.openai_teacher import OpenAITeacher
    teacher = OpenAITeacher(cfg, cache_dir=Path("storage/teacher_cache"))   # cfg: TeacherConfig
    checklists = teacher.principles(contexts)          # list[list[Principle]]
    traces = teacher.traces(quads, k=4, temperature=0.8)
    labels = teacher.verify(quads[0])                  # [1, 0, 1, ...], one per principle
    teacher.usage.to_dict()                            # calls, cache_hits, retries, tokens, cost

The API key is read from the environment variable named by ``cfg.openai_api_key_env`` (a dummy
is used when it is unset, for local servers); it is never logged and never part of a cache key
or entry. Retries (exponential backoff with jitter on 429, 408/409, 5xx, timeouts and connection
errors) are done here, with the client's own retries off, so that each one is counted.

The prompt builders below are shared with `editr1.teachers.hf_teacher`: both teachers ask the same
questions, in the Hugging Face / Qwen2.5-VL message format (PIL images inside the messages).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
from PIL import Image

from editr1.rrm.items import Context, Quadruple
from editr1.rrm.principles import Principle, parse_principles_json
from editr1.rrm.prompt import render_messages, render_user_text
from editr1.teachers.base import TeacherUsage
from editr1.teachers.cache import ResponseCache, image_sha256, request_key
from editr1.teachers.params import TeacherConfig

Message = dict[str, Any]
T = TypeVar("T")
R = TypeVar("R")

# Bump when a prompt below changes: it is part of every cache key.
TEACHER_PROMPT_VERSION = "teacher-v1"
DUMMY_API_KEY = "EMPTY"
# Temperature of re-asks after an invalid answer (the first ask is greedy).
REASK_TEMPERATURE = 0.7

# Short phrasings appended to the RRM prompt so the K traces of one quadruple differ (and so do
# their cache keys); trace 0 gets the plain RRM prompt.
TRACE_VARIANTS = (
    "",
    "Look closely at small details before you answer.",
    "Keep the reasoning short and precise.",
    "Describe both images carefully before checking the questions.",
    "Judge each question strictly.",
    "Think about what a careful human rater would say.",
)

PRINCIPLES_SYSTEM_PROMPT = (
    "You write checklists for judging an image edit. Given a source image and an editing "
    "instruction, write yes/no questions about the edited image, where yes is good: 3-4 'follow' "
    "questions (was the instruction carried out?), 3-4 'keep' questions (was everything else left "
    "unchanged?) and 2-3 'quality' questions (is the result clean and natural?). Reply with only a "
    'JSON list: [{"question": "...", "category": "follow"}, ...].'
)
_EXAMPLE_INSTRUCTION = "Make the red circle blue."
_EXAMPLE_PRINCIPLES = [
    Principle("Is the circle blue in the edited image?", "follow"),
    Principle("Is the recoloured object the circle that was red?", "follow"),
    Principle("Is the blue a clear, uniform blue rather than purple or teal?", "follow"),
    Principle("Are the circle's size, shape and position unchanged?", "keep"),
    Principle("Are the other objects unchanged in colour, shape and position?", "keep"),
    Principle("Is the background unchanged?", "keep"),
    Principle("Is the edited image free of artefacts, blur and distortion?", "quality"),
    Principle("Is the edited image free of added borders or frames?", "quality"),
]

VERIFY_SYSTEM_PROMPT = (
    "You check an image edit. You get a source image, an edited image, an instruction and "
    "numbered yes/no questions about the edit. Answer each question with 1 (yes) or 0 (no), in "
    "order. Reply with only a JSON list of the answers, e.g. [1, 0, 1]."
)


class TeacherError(RuntimeError):
    """A teacher request failed for good (retries exhausted, or an error that retrying cannot fix)."""


class TeacherOutputError(ValueError):
    """The teacher kept answering in a shape that fails validation, after every re-ask."""


# --- prompts (shared with the hf teacher) -------------------------------------------------------


def trace_suffix(k: int) -> str:
    """The phrase appended to the RRM prompt for trace ``k`` ('' for k = 0)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    suffix = TRACE_VARIANTS[k % len(TRACE_VARIANTS)]
    if k >= len(TRACE_VARIANTS):
        suffix = f"{suffix} (Answer {k + 1}.)".strip()
    return suffix


def trace_messages(quad: Quadruple, k: int) -> list[Message]:
    """The RRM prompt of `editr1.rrm.prompt.render_messages`, phrased for trace ``k``."""
    messages = render_messages(quad.instruction, quad.principles, quad.source, quad.edited)
    suffix = trace_suffix(k)
    if suffix:
        last = messages[-1]["content"][-1]
        last["text"] = f"{last['text']}\n{suffix}"
    return messages


def principles_messages(context: Context) -> list[Message]:
    """Few-shot prompt asking for a JSON checklist for one context (source image + instruction)."""
    example = json.dumps([p.to_dict() for p in _EXAMPLE_PRINCIPLES], ensure_ascii=False)
    return [
        {"role": "system", "content": [{"type": "text", "text": PRINCIPLES_SYSTEM_PROMPT}]},
        {"role": "user", "content": [{"type": "text", "text": f"Instruction: {_EXAMPLE_INSTRUCTION}"}]},
        {"role": "assistant", "content": [{"type": "text", "text": example}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Source image:"},
                {"type": "image", "image": context.source},
                {"type": "text", "text": f"Instruction: {context.instruction.strip()}"},
            ],
        },
    ]


def verify_messages(quad: Quadruple) -> list[Message]:
    """Prompt asking for 0/1 per principle of ``quad``, as a JSON list."""
    return [
        {"role": "system", "content": [{"type": "text", "text": VERIFY_SYSTEM_PROMPT}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Source image:"},
                {"type": "image", "image": quad.source},
                {"type": "text", "text": "Edited image:"},
                {"type": "image", "image": quad.edited},
                {"type": "text", "text": render_user_text(quad.instruction, quad.principles)},
            ],
        },
    ]


def reask_messages(messages: list[Message], answer: str, error: str) -> list[Message]:
    """``messages`` followed by the invalid ``answer`` and a request to fix it."""
    return [
        *messages,
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": f"That answer is invalid: {error}. Reply again with only the JSON list."}],
        },
    ]


def parse_verdicts(text: str, n: int) -> list[int]:
    """The first JSON list in ``text`` of ``n`` answers, each 0/1 or {"score": 0|1}; else ValueError."""
    decoder = json.JSONDecoder()
    found_list = False
    for match in itertools.islice(re.finditer(r"\[", text), 64):  # bounds the work on degenerate output
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if not isinstance(value, list):
            continue
        found_list = True
        answers = [v.get("score") if isinstance(v, dict) else v for v in value]
        if not answers or any(type(a) is not int or a not in (0, 1) for a in answers):
            continue
        if len(answers) != n:
            raise ValueError(f"expected {n} answers, got {len(answers)}")
        return answers
    if found_list:
        raise ValueError("the JSON list must hold only 0 or 1 per question")
    raise ValueError(f"no JSON list of 0/1 answers found ({len(text)} chars)")


def message_images(messages: Iterable[Message]) -> list[Image.Image]:
    """The images of the messages' image items, in order."""
    images = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            continue
        images += [part["image"] for part in content if part.get("type") == "image"]
    return images


def ask_temperature(attempt: int) -> float:
    """Greedy for the first ask, `REASK_TEMPERATURE` for re-asks."""
    return 0.0 if attempt == 0 else REASK_TEMPERATURE


def ask_until_valid(
    ask: Callable[[list[Message], int], str],
    messages: list[Message],
    validate: Callable[[str], T],
    max_retries: int,
    on_invalid: Callable[[], None],
    what: str,
) -> T:
    """Ask, validate, and re-ask with the error up to ``max_retries`` times; then TeacherOutputError.

    ``ask(conversation, attempt)`` answers one conversation; the first attempt should be greedy
    and later ones sampled (`REASK_TEMPERATURE`), since a model that repeats one invalid answer
    would otherwise get the same conversation, and the same answer, every time.
    """
    conversation = messages
    for attempt in range(max_retries + 1):
        answer = ask(conversation, attempt)
        try:
            return validate(answer)
        except ValueError as exc:
            error = str(exc)
            on_invalid()
            conversation = reask_messages(messages, answer, error)
    raise TeacherOutputError(f"{what}: no valid answer after {max_retries + 1} attempts (last error: {error})")


# --- the OpenAI wire format ---------------------------------------------------------------------


def image_data_url(image: Image.Image) -> str:
    """A PNG ``data:`` URL of ``image`` (modes PNG cannot hold are converted to RGB)."""
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class _ImageEncoder:
    """Encodes each image once per teacher call: (data URL, pixel hash), memoised by identity."""

    def __init__(self) -> None:
        self._done: dict[int, tuple[Image.Image, str, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, image: Image.Image) -> tuple[str, str]:
        with self._lock:
            hit = self._done.get(id(image))
        if hit is None:
            hit = (image, image_data_url(image), image_sha256(image))  # keeps the image alive: ids stay unique
            with self._lock:
                self._done[id(image)] = hit
        return hit[1], hit[2]


def to_wire(messages: list[Message], encode: Callable[[Image.Image], tuple[str, str]]) -> tuple[list[Message], list[Message]]:
    """(OpenAI messages with image data URLs, the same with image hashes: the cache-key form).

    Text-only content becomes a plain string (what every OpenAI-compatible server accepts for
    system and assistant turns); text parts are joined as the Qwen chat template joins them.
    """
    wire, keyed = [], []
    for message in messages:
        content = message["content"]
        if isinstance(content, str) or all(p.get("type") == "text" for p in content):
            text = content if isinstance(content, str) else "".join(p["text"] for p in content)
            wire.append({"role": message["role"], "content": text})
            keyed.append({"role": message["role"], "content": text})
            continue
        wire_parts, keyed_parts = [], []
        for part in content:
            if part.get("type") == "image":
                url, sha = encode(part["image"])
                wire_parts.append({"type": "image_url", "image_url": {"url": url}})
                keyed_parts.append({"type": "image_url", "image_sha256": sha})
            elif part.get("type") == "text":
                wire_parts.append({"type": "text", "text": part["text"]})
                keyed_parts.append({"type": "text", "text": part["text"]})
            else:
                raise ValueError(f"unsupported content part type {part.get('type')!r}")
        wire.append({"role": message["role"], "content": wire_parts})
        keyed.append({"role": message["role"], "content": keyed_parts})
    return wire, keyed


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # timeouts included
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


def _retry_after_s(exc: Exception) -> float | None:
    """The server's Retry-After hint in seconds (429 / 503 responses), if any."""
    value = exc.response.headers.get("retry-after") if isinstance(exc, openai.APIStatusError) else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAITeacher:
    """Teacher behind an OpenAI-compatible chat endpoint; see the module docstring.

    ``http_client`` replaces the transport (tests pass an ``httpx.MockTransport``); ``backoff_s``
    is the first retry delay (doubled per retry, capped at ``max_backoff_s``, times a jitter in
    [0.5, 1.5)); ``max_tokens`` bounds each completion.
    """

    name = "openai"

    def __init__(
        self,
        cfg: TeacherConfig,
        cache_dir: Path,
        *,
        http_client: httpx.Client | None = None,
        max_tokens: int = 1024,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ):
        if not cfg.openai_base_url or not cfg.openai_model:
            raise ValueError("the openai teacher needs teacher.openai_base_url and teacher.openai_model")
        self.cfg = cfg
        self.usage = TeacherUsage()
        self.cache = ResponseCache(Path(cache_dir))
        self.max_tokens = max_tokens
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._lock = threading.Lock()
        self._rng = random.Random(cfg.seed)
        self._client = openai.OpenAI(
            base_url=cfg.openai_base_url,
            api_key=os.environ.get(cfg.openai_api_key_env) or DUMMY_API_KEY,
            timeout=cfg.timeout_s,
            max_retries=0,
            http_client=http_client,
        )

    def __repr__(self) -> str:
        return f"OpenAITeacher(model={self.cfg.openai_model!r}, base_url={self.cfg.openai_base_url!r})"

    # --- Teacher interface ---

    def traces(self, quads: Sequence[Quadruple], k: int, temperature: float) -> list[list[str]]:
        """``k`` RRM output texts per quadruple (trace j uses `trace_messages(quad, j)`)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        encode = _ImageEncoder()
        jobs = [(quad, j) for quad in quads for j in range(k)]
        texts = self._map(lambda job: self._complete(trace_messages(*job), temperature, encode, index=job[1]), jobs)
        return [texts[i * k:(i + 1) * k] for i in range(len(quads))]

    def principles(self, contexts: Sequence[Context]) -> list[list[Principle]]:
        """A validated checklist per context; TeacherOutputError after ``cfg.max_retries`` re-asks."""
        encode = _ImageEncoder()

        def one(context: Context) -> list[Principle]:
            return ask_until_valid(
                lambda messages, attempt: self._complete(messages, ask_temperature(attempt), encode, attempt),
                principles_messages(context),
                parse_principles_json,
                self.cfg.max_retries,
                self._count_invalid,
                f"principles for context {context.context_id!r}",
            )

        return self._map(one, contexts)

    def verify(self, quad: Quadruple) -> list[int]:
        """Gold 0/1 per principle of ``quad``; TeacherOutputError after ``cfg.max_retries`` re-asks."""
        n = len(quad.principles)
        return ask_until_valid(
            lambda messages, attempt: self._complete(messages, ask_temperature(attempt), _ImageEncoder(), attempt),
            verify_messages(quad),
            lambda text: parse_verdicts(text, n),
            self.cfg.max_retries,
            self._count_invalid,
            f"verification of context {quad.context.context_id!r}",
        )

    # --- one completion: cache, retries, accounting ---

    def _complete(
        self, messages: list[Message], temperature: float, encode: _ImageEncoder, index: int = 0
    ) -> str:
        wire, keyed = to_wire(messages, encode)
        payload = {
            "version": TEACHER_PROMPT_VERSION,
            "model": self.cfg.openai_model,
            "messages": keyed,
            "temperature": float(temperature),
            "max_tokens": self.max_tokens,
            "k": index,
        }
        key = request_key(payload)
        hit = self.cache.get(key)
        if hit is not None and isinstance(hit.get("response"), dict) and hit["response"].get("choices"):
            with self._lock:
                self.usage.cache_hits += 1
            return _completion_text(hit["response"])
        response = self._create(wire, temperature)
        body = response.model_dump(mode="json")
        self._account(response)
        self.cache.put(key, {"request": payload, "response": body})
        return _completion_text(body)

    def _create(self, wire: list[Message], temperature: float) -> Any:
        retries = 0
        while True:
            with self._lock:
                self.usage.calls += 1
            try:
                return self._client.chat.completions.create(
                    model=self.cfg.openai_model,
                    messages=wire,
                    temperature=temperature,
                    max_tokens=self.max_tokens,
                    n=1,
                )
            except openai.APIError as exc:
                if not _retryable(exc) or retries >= self.cfg.max_retries:
                    with self._lock:
                        self.usage.errors += 1
                    why = f"HTTP {exc.status_code}" if isinstance(exc, openai.APIStatusError) else type(exc).__name__
                    raise TeacherError(
                        f"{self.cfg.openai_model} at {self.cfg.openai_base_url}: {why} after "
                        f"{retries} retries: {exc}"
                    ) from exc
                retries += 1
                with self._lock:
                    self.usage.retries += 1
                time.sleep(self._delay(retries, exc))

    def _delay(self, retry: int, exc: Exception) -> float:
        with self._lock:
            jitter = 0.5 + self._rng.random()
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (retry - 1)) * jitter
        hinted = _retry_after_s(exc)
        if hinted is not None:
            delay = max(delay, min(hinted, self.max_backoff_s))
        return delay

    def _account(self, response: Any) -> None:
        usage = response.usage
        prompt = int(usage.prompt_tokens or 0) if usage is not None else 0
        completion = int(usage.completion_tokens or 0) if usage is not None else 0
        cost = prompt / 1000 * self.cfg.price_prompt_per_1k + completion / 1000 * self.cfg.price_completion_per_1k
        with self._lock:
            self.usage.prompt_tokens += prompt
            self.usage.completion_tokens += completion
            self.usage.cost_usd += cost

    def _count_invalid(self) -> None:
        with self._lock:
            self.usage.invalid_outputs += 1

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.max_concurrency), thread_name_prefix="teacher") as pool:
            return list(pool.map(fn, items))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAITeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _completion_text(body: dict[str, Any]) -> str:
    choices = body.get("choices") or []
    if not choices:
        raise TeacherError("the response has no choices")
    return choices[0].get("message", {}).get("content") or ""


__all__ = [
    "OpenAITeacher",
    "TeacherError",
    "TeacherOutputError",
    "image_data_url",
    "parse_verdicts",
    "principles_messages",
    "to_wire",
    "trace_messages",
    "trace_suffix",
    "verify_messages",
]
