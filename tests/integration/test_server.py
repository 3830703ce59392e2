"""The reward server with the tiny RRM over real HTTP: uvicorn on a free 127.0.0.1 port in a thread.

Covers /health, the OpenAI teacher through the official client (/v1/chat/completions), /v1/score
from 6 concurrent clients (batched, results aligned with inputs), bearer auth, garbage → 4xx,
and the hf teacher on the same tiny model.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/integration/test_server.py
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import socket
import threading
import time

import httpx
import pytest
import torch
import uvicorn
from PIL import Image
from editr1.models import tiny_rrm
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.principles import Principle, generic_principles
from fastapi.testclient import TestClient

from editr1.serve.app import create_app
from editr1.serve.batcher import ModelRunner, ScoreBatcher
from editr1.serve.client import RewardClient, RewardItem, RewardServerError
from editr1.teachers.hf_teacher import HFTeacher
from editr1.teachers.openai_teacher import OpenAITeacher, TeacherError, TeacherOutputError, image_data_url
from editr1.teachers.params import TeacherConfig

torch.set_num_threads(1)

TOKEN = "test-token-7f3a"
TOKEN_ENV = "EDITR1_TEST_SERVER_TOKEN"
MAX_ITEMS = 8
MAX_BYTES = 1_000_000
COLOURS = ["red", "blue", "green", "purple"]
SHAPES = ["circle", "square", "triangle"]


def corpus(n: int = 120, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        shape, before, after = rng.choice(SHAPES), rng.choice(COLOURS), rng.choice(COLOURS)
        lines.append(f"Make the {shape} {after}. Before: a {before} {shape}. After: a {after} {shape}. "
                     f'[{{"question": "Is the {shape} {after}?", "score": 1}}] {{"average_score": 1.0}} '
                     f"<score>{rng.randint(0, 10)}</score>")
    return lines


def quad(i: int) -> Quadruple:
    instruction = f"make the {SHAPES[i % 3]} {COLOURS[i % 4]}"
    source = Image.new("RGB", (56, 56), (20 * i % 256, 100, 50))
    edited = Image.new("RGB", (64, 48), (50, 20 * i % 256, 200))
    principles = [Principle(f"Is item {i} edited as asked?", "follow"), *generic_principles(instruction)[1:]]
    return Quadruple(Context(f"ctx{i}", instruction, source), edited, tuple(principles))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The tiny RRM served with a token, small limits and short generations; yields its base URL."""
    model, processor = tiny_rrm(corpus(), tmp_path_factory.mktemp("rrm"))
    app = create_app(model, processor, token=TOKEN, max_batch=8, max_wait_ms=20, max_items=MAX_ITEMS,
                     max_request_bytes=MAX_BYTES, max_new_tokens=12, max_chat_tokens=12, model_name="tiny-rrm")
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the reward server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=20)


def test_health(server):
    body = httpx.get(f"{server}/health").json()
    assert body["status"] == "ok" and body["model"] == "tiny-rrm"


def test_openai_teacher_through_the_server(server, tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    cfg = TeacherConfig(kind="openai", openai_base_url=f"{server}/v1", openai_model="tiny-rrm",
                        openai_api_key_env=TOKEN_ENV, max_concurrency=4, max_retries=1)
    quads = [quad(0), quad(1)]
    with OpenAITeacher(cfg, tmp_path / "cache", max_tokens=8) as teacher:
        traces = teacher.traces(quads, k=2, temperature=1.0)
        assert [len(t) for t in traces] == [2, 2] and all(isinstance(t, str) for ts in traces for t in ts)
        usage = teacher.usage
        assert usage.calls == 4 and usage.retries == 0 and usage.cache_hits == 0
        assert usage.prompt_tokens > 4 * 50 and 0 < usage.completion_tokens <= 4 * 8
        assert teacher.traces(quads, k=2, temperature=1.0) == traces
        assert teacher.usage.cache_hits == 4 and teacher.usage.calls == 4

    monkeypatch.setenv(TOKEN_ENV, "wrong")
    with OpenAITeacher(cfg, tmp_path / "cache2", max_tokens=8) as teacher:
        with pytest.raises(TeacherError, match="HTTP 401"):
            teacher.traces(quads[:1], k=1, temperature=0.0)


def test_chat_completion_shape(server):
    body = {"model": "x", "n": 2, "temperature": 1.0, "max_tokens": 1000, "seed": 3,
            "messages": [{"role": "system", "content": "Judge."},
                         {"role": "user", "content": [
                             {"type": "text", "text": "Source:"},
                             {"type": "image_url", "image_url": {"url": image_data_url(quad(0).source)}},
                             {"type": "text", "text": "Is it blue?"}]}]}
    response = httpx.post(f"{server}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["object"] == "chat.completion" and out["model"] == "x" and out["id"].startswith("chatcmpl-")
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert all(c["message"]["role"] == "assistant" and c["finish_reason"] in ("stop", "length") for c in out["choices"])
    usage = out["usage"]
    assert 0 < usage["completion_tokens"] <= 2 * 12  # max_tokens capped at the server's limit
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_six_concurrent_clients_get_aligned_results(server):
    jobs = [[quad(3 * c + j) for j in range(3)] for c in range(6)]
    with RewardClient(server, token=TOKEN) as client:
        reference = [client.score_quads([q])[0] for q in (jobs[0][0], jobs[5][2])]
        before = client.health()["batches"]
        start = threading.Barrier(6)
        results: dict[int, list] = {}
        errors: list[BaseException] = []

        def run(c: int) -> None:
            try:
                start.wait()
                results[c] = client.score_quads(jobs[c])
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(c,)) for c in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors and sorted(results) == list(range(6))
        for c in range(6):
            for q, r in zip(jobs[c], results[c]):
                assert [p.question for p in r.principles] == [p.question for p in q.principles]
                assert r.principles[0].category == "follow"
        # greedy outputs do not depend on the batch an item landed in
        assert results[0][0].reasoning == reference[0].reasoning
        assert results[5][2].reasoning == reference[1].reasoning
        health = client.health()
        # items of different requests shared batches (one request holds 3)
        assert health["batches"] - before < 18 and health["largest_batch"] >= 4
        # no principles: the server writes generic ones
        [r] = client.score([RewardItem(quad(0).source, quad(0).edited, "make the circle red")])
        assert [p.question for p in r.principles] == [p.question for p in generic_principles("make the circle red")]
        assert len(client.rewards([RewardItem(quad(1).source, quad(1).edited, "make it blue")], fallback=-1.0)) == 1


def test_token_is_required(server):
    item = {"source_image": image_data_url(quad(0).source), "edited_image": image_data_url(quad(0).edited),
            "instruction": "make it blue"}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}):
        response = httpx.post(f"{server}/v1/score", json={"items": [item]}, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["message"] == "missing or wrong bearer token"
    assert httpx.post(f"{server}/v1/chat/completions", json={}).status_code == 401
    with RewardClient(server) as client, pytest.raises(RewardServerError, match="HTTP 401"):
        client.score_quads([quad(0)])


def _png(size=(32, 32)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_garbage_gets_clear_4xx(server):
    good = {"source_image": _png(), "edited_image": "data:image/png;base64," + _png(), "instruction": "make it blue"}
    truncated = base64.b64encode(base64.b64decode(_png((64, 64)))[:60]).decode()
    score_bodies = [
        b"not json at all", b'{"items": [', b"[1, 2, 3]", b"\xff\xfe\x00", b'{"items": [{"instruction": NaN}]}',
        json.dumps({}), json.dumps({"items": []}), json.dumps({"items": "abc"}), json.dumps({"items": [None]}),
        json.dumps({"items": [{**good, "instruction": ""}]}),
        json.dumps({"items": [{k: v for k, v in good.items() if k != "instruction"}]}),
        json.dumps({"items": [{**good, "extra": 1}]}),
        json.dumps({"items": [{**good, "instruction": 7}]}),
        json.dumps({"items": [{**good, "source_image": "!!!not base64!!!"}]}),
        json.dumps({"items": [{**good, "source_image": base64.b64encode(b"hello world").decode()}]}),
        json.dumps({"items": [{**good, "edited_image": truncated}]}),
        json.dumps({"items": [{**good, "edited_image": "https://example.com/x.png"}]}),
        json.dumps({"items": [{**good, "edited_image": "data:text/plain;base64,aGVsbG8="}]}),
        json.dumps({"items": [{**good, "source_image": _png((1000, 2))}]}),
        json.dumps({"items": [{**good, "principles": []}]}),
        json.dumps({"items": [{**good, "principles": [{"question": "Q?", "category": "vibes"}]}]}),
        json.dumps({"items": [{**good, "principles": [{"question": "Q?"}]}]}),
        json.dumps({"items": [{**good, "principles": "Is it blue?"}]}),
        json.dumps({"items": [good] * (MAX_ITEMS + 1)}),
        json.dumps({"items": [{**good, "instruction": " \n "}]}),
        json.dumps({"items": [{**good, "instruction": "x" * 4000,
                               "principles": [{"question": f"Q{i} " + "y" * 400, "category": "keep"} for i in range(20)]}]}),
    ]
    chat_bodies = [
        json.dumps({"messages": []}), json.dumps({"model": "m"}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "n": 100, "temperature": 1}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "n": 2, "temperature": 0}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}),
        json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}),
        json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
        json.dumps({"messages": [{"role": "user", "content": [{"type": "audio", "data": "x"}]}]}),
    ]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(headers=headers, timeout=30) as http:
        cases = [("/v1/score", b) for b in score_bodies] + [("/v1/chat/completions", b) for b in chat_bodies]
        for path, body in cases:
            response = http.post(f"{server}{path}", content=body)
            assert 400 <= response.status_code < 500, (path, body[:120], response.status_code, response.text[:300])
            error = response.json()["error"]
            assert error["message"] and error["code"] == response.status_code

        too_big = http.post(f"{server}/v1/score", content=b"x" * (MAX_BYTES + 1))
        assert too_big.status_code == 413 and "larger than" in too_big.json()["error"]["message"]
        chunked = http.post(f"{server}/v1/score", content=iter([b"x" * 600_000, b"x" * 600_000]))
        assert chunked.status_code == 413
        assert http.get(f"{server}/v1/score").status_code == 405
        assert http.get(f"{server}/nowhere").status_code == 404
        message = http.post(f"{server}/v1/score", content=score_bodies[13]).json()["error"]["message"]
        assert message == "items.0.source_image: not valid base64"
        # still serving
        assert http.post(f"{server}/v1/score", json={"items": [good]}).status_code == 200


def test_hf_teacher_on_the_tiny_model(tmp_path):
    model, processor = tiny_rrm(corpus(), tmp_path / "rrm")
    cfg = TeacherConfig(kind="hf", max_retries=1, seed=5)
    teacher = HFTeacher(model, processor, cfg, batch_size=4, max_new_tokens=8)
    traces = teacher.traces([quad(0), quad(1)], k=2, temperature=1.0)
    assert [len(t) for t in traces] == [2, 2]
    assert teacher.usage.calls == 4 and teacher.usage.completion_tokens > 0 and teacher.usage.cost_usd == 0
    with pytest.raises(TeacherOutputError, match="no valid answer after 2 attempts"):
        teacher.principles([quad(0).context])  # an untrained model writes no checklist
    assert teacher.usage.invalid_outputs == 2


def test_batcher_isolates_a_failing_item_and_never_overlaps_model_calls():
    lock, active, sizes = threading.Lock(), [0, 0], []

    def fn(items: list[str]) -> list[str]:
        with lock:
            active[0] += 1
            active[1] = max(active)
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        if "bad" in items:
            raise ValueError("bad item")
        sizes.append(len(items))
        return [x.upper() for x in items]

    async def main():
        runner = ModelRunner()
        batcher = ScoreBatcher(fn, runner, max_batch=4, max_wait_ms=20)
        batcher.start()
        requests = [["a", "b"], ["c", "bad"], ["d"], ["e", "f", "g"], ["h"]]
        out = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
        await batcher.stop()
        runner.close()
        return out, batcher.stats

    out, stats = asyncio.run(main())
    assert out[0] == ["A", "B"] and out[2] == ["D"] and out[3] == ["E", "F", "G"] and out[4] == ["H"]
    assert isinstance(out[1], ValueError)
    assert active[1] == 1 and max(sizes) <= 4 and stats.largest >= 2 and stats.item_errors == 1


def test_principles_fn_writes_missing_checklists(tmp_path):
    model, processor = tiny_rrm(corpus(), tmp_path / "rrm")
    seen = []

    def principles_fn(instruction: str, source: Image.Image) -> list[Principle]:
        if instruction == "fail":
            raise ValueError("cannot write principles for that")
        seen.append(source.size)
        return [Principle(f"Was '{instruction}' done?", "follow"), Principle("Is it clean?", "quality")]

    app = create_app(model, processor, principles_fn=principles_fn, max_new_tokens=4)
    item = {"source_image": image_data_url(quad(0).source), "edited_image": image_data_url(quad(0).edited)}
    with TestClient(app) as http:
        out = http.post("/v1/score", json={"items": [{**item, "instruction": "paint it"}]}).json()
        assert [p["question"] for p in out["results"][0]["principles"]] == ["Was 'paint it' done?", "Is it clean?"]
        assert seen == [(56, 56)]
        bad = http.post("/v1/score", json={"items": [{**item, "instruction": "fail"}]})
        assert bad.status_code == 422 and "cannot write principles" in bad.json()["error"]["message"]
