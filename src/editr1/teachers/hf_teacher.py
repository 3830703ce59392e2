"""The `hf` teacher: a locally loaded transformers VLM (Qwen2.5-VL class) answers the same prompts
as the `openai` teacher (DESIGN §5), so a local checkpoint can write the cold-start data.

    from editr1.models import load_rrm
    from editr1.teachers.hf_teacher import HFTeacher
    model, processor = load_rrm("Qwen/Qwen2.5-VL-7B-Instruct", device="cuda", dtype=torch.bfloat16)
    teacher = HFTeacher(model, processor, cfg)       # cfg: TeacherConfig (seed, max_retries)
    traces = teacher.traces(quads, k=4, temperature=0.8)

Generation is batched (``batch_size`` prompts per `generate_ids` call) and seeded from
``cfg.seed`` without touching the global RNG. Calls are not cached on disk: a local model has no
stable identity to key on (the same path can hold new weights), and it costs no money.
Tokens are counted in ``usage``; ``cost_usd`` stays 0.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch

from editr1.models.processor import encode_batch
from editr1.models.rrm import generate_ids
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.principles import Principle, parse_principles_json
from editr1.teachers.base import TeacherUsage
from editr1.teachers.openai_teacher import (
    Message,
    ask_temperature,
    ask_until_valid,
    message_images,
    parse_verdicts,
    principles_messages,
    trace_messages,
    verify_messages,
)
from editr1.teachers.params import TeacherConfig


class HFTeacher:
    """Teacher backed by an in-process transformers VLM and its processor (see module docstring)."""

    name = "hf"

    def __init__(self, model, processor, cfg: TeacherConfig, *, batch_size: int = 8, max_new_tokens: int = 512):
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"need batch_size, max_new_tokens >= 1, got {batch_size}, {max_new_tokens}")
        self.model = model
        self.processor = processor
        self.cfg = cfg
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.usage = TeacherUsage()
        self._calls = 0  # seeds successive sampled generations differently, reproducibly
        self._lock = threading.Lock()  # one generation at a time: the model is not thread-safe

    def traces(self, quads: Sequence[Quadruple], k: int, temperature: float) -> list[list[str]]:
        """``k`` RRM output texts per quadruple; trace j uses `trace_messages(quad, j)`."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        conversations = [trace_messages(quad, j) for quad in quads for j in range(k)]
        texts = self.generate(conversations, temperature)
        return [texts[i * k:(i + 1) * k] for i in range(len(quads))]

    def principles(self, contexts: Sequence[Context]) -> list[list[Principle]]:
        """A validated checklist per context; TeacherOutputError after ``cfg.max_retries`` re-asks."""
        return [
            ask_until_valid(
                lambda messages, attempt: self.generate([messages], ask_temperature(attempt))[0],
                principles_messages(context),
                parse_principles_json,
                self.cfg.max_retries,
                self._count_invalid,
                f"principles for context {context.context_id!r}",
            )
            for context in contexts
        ]

    def verify(self, quad: Quadruple) -> list[int]:
        """Gold 0/1 per principle of ``quad``; TeacherOutputError after ``cfg.max_retries`` re-asks."""
        n = len(quad.principles)
        return ask_until_valid(
            lambda messages, attempt: self.generate([messages], ask_temperature(attempt))[0],
            verify_messages(quad),
            lambda text: parse_verdicts(text, n),
            self.cfg.max_retries,
            self._count_invalid,
            f"verification of context {quad.context.context_id!r}",
        )

    @torch.no_grad()
    def generate(self, conversations: Sequence[list[Message]], temperature: float) -> list[str]:
        """One completion per conversation (greedy when ``temperature == 0``), in batches."""
        texts: list[str] = []
        with self._lock:
            was_training = self.model.training
            self.model.eval()
            try:
                for start in range(0, len(conversations), self.batch_size):
                    chunk = list(conversations[start:start + self.batch_size])
                    batch = encode_batch(self.processor, chunk, [message_images(m) for m in chunk])
                    seed = self.cfg.seed + self._calls if temperature > 0 else None
                    self._calls += 1
                    out = generate_ids(self.model, self.processor, batch, self.max_new_tokens, temperature, 1, seed)
                    self.usage.calls += len(chunk)
                    self.usage.prompt_tokens += int(batch["attention_mask"].sum())
                    self.usage.completion_tokens += int(out.completion_mask.sum())
                    texts += out.texts
            finally:
                self.model.train(was_training)
        return texts

    def _count_invalid(self) -> None:
        self.usage.invalid_outputs += 1
