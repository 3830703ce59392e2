"""`RewardClient`: the editor's RL asks the reward server (editr1.serve.app) for rewards over HTTP.

    from editr1.serve.client import RewardClient, RewardItem
    with RewardClient("http://127.0.0.1:8000", token=os.environ["EDITR1_REWARD_TOKEN"]) as client:
        client.health()                                        # {"status": "ok", "model": ...}
        results = client.score([RewardItem(source, edited, "make the circle blue")])
        rewards = client.rewards(items, fallback=0.0)          # one float per item
        results = client.score_quads(quads)                    # editr1.rrm.items.Quadruple, principles sent

Large lists are split into requests of ``max_items`` and sent one after another (the server batches
across clients; run several clients in threads for throughput). Connection errors, timeouts, 429
and 5xx are retried with exponential backoff; other errors raise `RewardServerError` with the
server's message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image

from editr1.rrm.items import Quadruple
from editr1.rrm.principles import Principle
from editr1.teachers.openai_teacher import image_data_url


class RewardServerError(RuntimeError):
    """The reward server refused a request or stayed unreachable; ``status`` is the HTTP code or None."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RewardItem:
    """One edit to score. Without principles the server writes them (its principles_fn or generic ones)."""

    source: Image.Image
    edited: Image.Image
    instruction: str
    principles: Sequence[Principle] | None = None


@dataclass(frozen=True)
class PrincipleResult:
    question: str
    category: str
    score: int | None


@dataclass(frozen=True)
class RewardResult:
    """The server's verdict: the readout score (None when the RRM gave none), parse flag, answers."""

    score: float | None
    parse_ok: bool
    principles: tuple[PrincipleResult, ...]
    reasoning: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RewardResult:
        return cls(
            score=None if data["score"] is None else float(data["score"]),
            parse_ok=bool(data["parse_ok"]),
            principles=tuple(PrincipleResult(p["question"], p["category"], p["score"]) for p in data["principles"]),
            reasoning=data["reasoning"],
        )


def _item_json(item: RewardItem) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source_image": image_data_url(item.source),
        "edited_image": image_data_url(item.edited),
        "instruction": item.instruction,
    }
    if item.principles is not None:
        body["principles"] = [p.to_dict() for p in item.principles]
    return body


class RewardClient:
    """Small synchronous client for /health and /v1/score; thread-safe (one httpx.Client)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 300.0,
        max_items: int = 64,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        http_client: httpx.Client | None = None,
    ):
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout_s)
        self._base_url = base_url.rstrip("/")
        self._headers = headers
        self.max_items = max_items
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    def __repr__(self) -> str:
        return f"RewardClient({self._base_url!r})"

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def score(self, items: Sequence[RewardItem]) -> list[RewardResult]:
        """One result per item, in order."""
        results: list[RewardResult] = []
        for start in range(0, len(items), self.max_items):
            chunk = items[start:start + self.max_items]
            body = {"items": [_item_json(item) for item in chunk]}
            data = self._request("POST", "/v1/score", json=body)
            if len(data["results"]) != len(chunk):
                raise RewardServerError(f"{len(chunk)} items sent but {len(data['results'])} results came back")
            results += [RewardResult.from_json(r) for r in data["results"]]
        return results

    def score_quads(self, quads: Sequence[Quadruple]) -> list[RewardResult]:
        """Score quadruples with their own principles."""
        return self.score([RewardItem(q.source, q.edited, q.instruction, q.principles) for q in quads])

    def rewards(self, items: Sequence[RewardItem], fallback: float = 0.0) -> list[float]:
        """One reward per item: its score, or ``fallback`` when the RRM gave none."""
        return [r.score if r.score is not None else float(fallback) for r in self.score(items)]

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = self._base_url + path
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self._http.request(method, url, headers=self._headers, **kwargs)
            except httpx.TransportError as exc:  # connection errors and timeouts
                if last:
                    raise RewardServerError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
            else:
                if response.status_code < 400:
                    return response.json()
                if last or not (response.status_code == 429 or response.status_code >= 500):
                    raise RewardServerError(
                        f"{method} {url}: HTTP {response.status_code}: {_error_message(response)}",
                        response.status_code,
                    )
            time.sleep(self.backoff_s * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
