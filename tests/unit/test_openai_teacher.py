"""OpenAITeacher against a fake OpenAI-compatible server (an httpx.MockTransport): retries, re-asks,
cache, accounting, and that the API key never reaches the cache.

Run: .venv/bin/python -m pytest tests/unit/test_openai_teacher.py
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from editr1.rrm.items import Context, Quadruple
from editr1.rrm.principles import generic_principles
from editr1.teachers.openai_teacher import (
    TRACE_VARIANTS,
    OpenAITeacher,
    TeacherError,
    TeacherOutputError,
    parse_verdicts,
    trace_suffix,
)
from editr1.teachers.params import TeacherConfig

SECRET = "sk-test-SECRET-4c0ffee"
KEY_ENV = "EDITR1_TEST_OPENAI_KEY"
PRINCIPLES_JSON = json.dumps([p.to_dict() for p in generic_principles("make the circle blue")])


def completion(content: str, prompt_tokens: int = 100, completion_tokens: int = 50) -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake-vlm",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class FakeServer:
    """Answers chat requests from a script (responses, callables or exceptions), then a default."""

    def __init__(self, script: list | None = None, default: Callable[[dict], httpx.Response] | None = None):
        self.script = list(script or [])
        self.default = default or (lambda body: httpx.Response(200, json=completion("<score>7</score>")))
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        with self._lock:
            self.requests.append(body)
            self.auth.append(request.headers.get("authorization", ""))
            step = self.script.pop(0) if self.script else None
        if step is None:
            return self.default(body)
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step(body)
        return step

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def config(**overrides) -> TeacherConfig:
    values = dict(kind="openai", openai_base_url="http://fake-vlm.test/v1", openai_model="fake-vlm",
                  openai_api_key_env=KEY_ENV, max_concurrency=4, max_retries=3,
                  price_prompt_per_1k=0.01, price_completion_per_1k=0.03)
    values.update(overrides)
    return TeacherConfig(**values)


def make_teacher(tmp_path: Path, server: FakeServer, **overrides) -> OpenAITeacher:
    return OpenAITeacher(config(**overrides), tmp_path / "cache", http_client=server.client(), backoff_s=0.001)


def quad(i: int = 0) -> Quadruple:
    source = Image.new("RGB", (32, 32), (200, 30, 30 + i))
    edited = Image.new("RGB", (32, 32), (30, 30, 200 + i))
    context = Context(f"ctx{i}", "make the circle blue", source)
    return Quadruple(context, edited, tuple(generic_principles("make the circle blue")))


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def test_retries_on_429_and_500_then_succeeds(tmp_path):
    server = FakeServer([httpx.Response(429, json={"error": {"message": "slow down"}}),
                         httpx.Response(500, json={"error": {"message": "boom"}}),
                         httpx.Response(200, json=completion("ok <score>8</score>"))])
    teacher = make_teacher(tmp_path, server)
    assert teacher.traces([quad()], k=1, temperature=0.7) == [["ok <score>8</score>"]]
    assert len(server.requests) == 3
    assert (teacher.usage.calls, teacher.usage.retries, teacher.usage.errors) == (3, 2, 0)
    assert server.auth == [f"Bearer {SECRET}"] * 3  # the key from the environment is what is sent


def test_retries_connection_errors_and_timeouts(tmp_path):
    request = httpx.Request("POST", "http://fake-vlm.test/v1/chat/completions")
    server = FakeServer([httpx.ConnectError("refused", request=request), httpx.ReadTimeout("slow", request=request),
                         httpx.Response(503), httpx.Response(200, json=completion("done"))])
    teacher = make_teacher(tmp_path, server)
    assert teacher.traces([quad()], k=1, temperature=0.0) == [["done"]]
    assert teacher.usage.retries == 3


def test_gives_up_after_max_retries_and_does_not_retry_client_errors(tmp_path):
    server = FakeServer(default=lambda body: httpx.Response(502, json={"error": {"message": "bad gateway"}}))
    teacher = make_teacher(tmp_path, server, max_retries=2)
    with pytest.raises(TeacherError, match="HTTP 502 after 2 retries"):
        teacher.traces([quad()], k=1, temperature=0.0)
    assert (len(server.requests), teacher.usage.retries, teacher.usage.errors) == (3, 2, 1)

    server = FakeServer(default=lambda body: httpx.Response(400, json={"error": {"message": "bad image"}}))
    teacher = make_teacher(tmp_path, server)
    with pytest.raises(TeacherError, match="HTTP 400"):
        teacher.traces([quad()], k=1, temperature=0.0)
    assert (len(server.requests), teacher.usage.retries) == (1, 0)


def test_invalid_principles_json_is_asked_again_then_accepted(tmp_path):
    server = FakeServer([httpx.Response(200, json=completion("Sure! Here are some questions.")),
                         httpx.Response(200, json=completion('[{"question": "Is it blue?", "category": "follow"}]')),
                         httpx.Response(200, json=completion(f"```json\n{PRINCIPLES_JSON}\n```"))])
    teacher = make_teacher(tmp_path, server)
    [checklist] = teacher.principles([quad().context])
    assert checklist == generic_principles("make the circle blue")
    assert teacher.usage.invalid_outputs == 2
    # the re-ask shows the model its invalid answer and the validation error
    reask = server.requests[2]["messages"]
    assert reask[-2] == {"role": "assistant", "content": '[{"question": "Is it blue?", "category": "follow"}]'}
    assert "expected 3-4 'follow' principles" in reask[-1]["content"]
    # the few-shot prompt carries the source image as a PNG data URL
    image_parts = [p for p in server.requests[0]["messages"][-1]["content"] if p["type"] == "image_url"]
    assert len(image_parts) == 1 and image_parts[0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_principles_that_stay_invalid_raise_a_clear_error(tmp_path):
    server = FakeServer(default=lambda body: httpx.Response(200, json=completion("no idea")))
    teacher = make_teacher(tmp_path, server, max_retries=2)
    with pytest.raises(TeacherOutputError, match="principles for context 'ctx0': no valid answer after 3 attempts"):
        teacher.principles([quad().context])
    assert teacher.usage.invalid_outputs == 3 and len(server.requests) == 3


def test_verify_returns_labels_and_reasks_on_wrong_length(tmp_path):
    server = FakeServer([httpx.Response(200, json=completion("[1, 0]")),
                         httpx.Response(200, json=completion("Answers: [1, 1, 1, 0, 1, 1, 1, 1, 0, 1]"))])
    teacher = make_teacher(tmp_path, server)
    assert teacher.verify(quad()) == [1, 1, 1, 0, 1, 1, 1, 1, 0, 1]
    assert teacher.usage.invalid_outputs == 1
    assert parse_verdicts('[{"question": "a", "score": 1}, {"question": "b", "score": 0}]', 2) == [1, 0]
    with pytest.raises(ValueError, match="only 0 or 1"):
        parse_verdicts("[2, 1]", 2)


def test_second_identical_call_is_a_cache_hit_without_requests(tmp_path):
    server = FakeServer(default=lambda body: httpx.Response(200, json=completion(f"trace {body['messages'][-1]['content'][-1]['text'][-12:]}")))
    teacher = make_teacher(tmp_path, server)
    first = teacher.traces([quad(0), quad(1)], k=3, temperature=1.0)
    assert len(server.requests) == 6 and teacher.usage.cache_hits == 0
    # the K traces of one quadruple are asked with different phrasings
    texts = [r["messages"][-1]["content"][-1]["text"] for r in server.requests]
    assert len(set(texts)) == 3
    again = OpenAITeacher(config(), tmp_path / "cache", http_client=FakeServer().client())
    assert again.traces([quad(0), quad(1)], k=3, temperature=1.0) == first
    assert again.usage.cache_hits == 6 and again.usage.calls == 0
    # another temperature is another request
    teacher.traces([quad(0)], k=1, temperature=0.5)
    assert len(server.requests) == 7


def test_token_and_cost_accounting(tmp_path):
    server = FakeServer(default=lambda body: httpx.Response(200, json=completion("x", 1200, 300)))
    teacher = make_teacher(tmp_path, server)
    teacher.traces([quad(0), quad(1)], k=2, temperature=1.0)
    usage = teacher.usage
    assert (usage.calls, usage.prompt_tokens, usage.completion_tokens) == (4, 4800, 1200)
    assert usage.cost_usd == pytest.approx(4800 / 1000 * 0.01 + 1200 / 1000 * 0.03)
    assert usage.to_dict()["cost_usd"] == pytest.approx(0.084)


def test_api_key_never_in_cache_files_or_repr(tmp_path):
    server = FakeServer([httpx.Response(429)], default=lambda body: httpx.Response(200, json=completion("<score>5</score>")))
    teacher = make_teacher(tmp_path, server)
    teacher.traces([quad()], k=2, temperature=1.0)
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 2
    for path in files:
        text = path.read_text()
        assert SECRET not in text and KEY_ENV not in text
        entry = json.loads(text)
        assert "base64" not in json.dumps(entry["request"])  # images are keyed by hash, not stored
    assert SECRET not in repr(teacher)


def test_trace_suffixes_differ():
    suffixes = [trace_suffix(k) for k in range(2 * len(TRACE_VARIANTS))]
    assert suffixes[0] == "" and len(set(suffixes)) == len(suffixes)
