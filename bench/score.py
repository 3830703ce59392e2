"""RRM scoring throughput: `score` (parsed and expected readouts) against bare `model.generate`, on the
same pre-built batches, in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/score.py [--quads 64] [--batch-size 16] [--max-new-tokens 64]
                                                     [--train-steps 60] [--repeats 3]

Builds a tiny RRM offline (tokenizer trained on a few hundred synthetic lines) and 64 quadruples of
56×56 drawn shapes. With ``--train-steps N > 0`` (default) the model is first trained N steps to
write "before: … after: … <score>s</score>", so outputs contain `<score>` and the expected readout
really runs its extra forward pass; with 0 a random model writes (mostly) max_new_tokens tokens
with no `<score>`, and the expected readout costs nothing extra.

Equal work: every path decodes greedily with the same stop tokens, suppressed tokens and
max_new_tokens, so they generate the same tokens (checked: bare and `generate_ids` sequences are
equal) — no min_new_tokens is needed for that. Timed, best of ``--repeats`` interleaved rounds:
  bare           model.generate on the pre-built batches;
  score_batch    `score_batch` on the same pre-built batches (generation + decode + parse [+ forward]);
  score()        `score` end to end from quadruples (adds prompt rendering and image encoding);
  encode_quadruples  that encoding alone.
Prints quadruples/s and the ratios to bare, by wall and by CPU time (goal ≤ 1.10 for the parsed readout),
then the reward server's throughput with ``--clients`` concurrent clients vs in-process `score()`.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from PIL import Image, ImageDraw
from transformers import GenerationConfig

from editr1.models import TinyRRMSpec, encode_batch, generate_ids, tiny_rrm, vision_token_ids
from editr1.rrm import SYSTEM_PROMPT, generic_principles, render_messages, render_user_text
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.scoring import encode_quadruples, parse_rate, score, score_batch

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 180, 30), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")


def draw(shape: str, colour: str, box: tuple[int, int, int, int]) -> Image.Image:
    image = Image.new("RGB", (56, 56), (235, 235, 235))
    pen = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    if shape == "circle":
        pen.ellipse(box, fill=COLOURS[colour])
    elif shape == "square":
        pen.rectangle(box, fill=COLOURS[colour])
    else:
        pen.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=COLOURS[colour])
    return image


def make_quads(n: int, seed: int = 0) -> tuple[list[Quadruple], list[str]]:
    """n colour-change quadruples and, for each, an RRM-style target text."""
    rng = random.Random(seed)
    quads, targets = [], []
    for i in range(n):
        shape = rng.choice(SHAPES)
        before, after, got = rng.choice(sorted(COLOURS)), *rng.sample(sorted(COLOURS), 2)
        x, y = rng.randint(4, 24), rng.randint(4, 24)
        box = (x, y, x + 24, y + 24)
        instruction = f"Make the {shape} {after}."
        quads.append(
            Quadruple(Context(f"c{i}", instruction, draw(shape, before, box)), draw(shape, got, box),
                      tuple(generic_principles(instruction)))
        )
        ok = got == after
        targets.append(
            f"before: {before} {shape}. after: {got} {shape}. follow: requested {after}, got {got}: "
            f"{'yes' if ok else 'no'}. keep: yes. quality: good. <score>{9 if ok else 3}</score>"
        )
    return quads, targets


def corpus(quads: list[Quadruple], targets: list[str]) -> list[str]:
    lines = [SYSTEM_PROMPT] * 20 + ["Source image: Edited image:"] * 20
    lines += [render_user_text(q.instruction, q.principles) for q in quads] + targets
    rng = random.Random(1)
    words = ["red", "blue", "green", "yellow", "circle", "square", "triangle", "top", "left", "kept", "moved"]
    lines += [" ".join(rng.choices(words, k=12)) for _ in range(200)]
    return lines


def train(model, processor, quads: list[Quadruple], targets: list[str], steps: int, batch: int = 4) -> None:
    """Supervised steps on the target tokens only (left padding: completions sit at the right end)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        idx = [(step * batch + j) % len(quads) for j in range(batch)]
        qs = [quads[i] for i in idx]
        messages = [render_messages(q.instruction, q.principles, q.source, q.edited)
                    + [{"role": "assistant", "content": targets[i]}] for q, i in zip(qs, idx)]
        full = encode_batch(processor, messages, [[q.source, q.edited] for q in qs], add_generation_prompt=False)
        prompt_tokens = encode_quadruples(processor, qs)["attention_mask"].sum(1)
        length = full["input_ids"].shape[1]
        n_target = full["attention_mask"].sum(1) - prompt_tokens
        labels = full["input_ids"].masked_fill(torch.arange(length)[None] < (length - n_target)[:, None], -100)
        optimizer.zero_grad()
        model(**full, labels=labels).loss.backward()
        optimizer.step()
    model.eval()


def best_of_interleaved(repeats: int, fns: dict[str, Callable[[], object]]) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) seconds of each function over ``repeats`` rounds. Each round runs every function
    once, so a neighbour's load on this shared machine hits all of them alike; CPU time (this process,
    one thread) is what the load inflates least."""
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quads", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=60, help="0: a random model (no <score> emitted).")
    parser.add_argument("--repeats", type=int, default=3, help="Best of N for every measurement.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=8, help="Concurrent server clients (0 skips the server).")
    parser.add_argument("--max-wait-ms", type=float, default=50.0, help="Server batching window.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    quads, targets = make_quads(args.quads)
    with tempfile.TemporaryDirectory() as tmp:
        model, processor = tiny_rrm(corpus(quads, targets), Path(tmp), TinyRRMSpec())
    started = time.perf_counter()
    train(model, processor, quads, targets, args.train_steps)
    trained_s = time.perf_counter() - started
    model.eval()

    chunks = [quads[i : i + args.batch_size] for i in range(0, len(quads), args.batch_size)]
    batches = [encode_quadruples(processor, chunk) for chunk in chunks]
    tokenizer = processor.tokenizer
    # The same decoding as generate_ids: greedy, same stops, same suppressed tokens.
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens, do_sample=False, num_return_sequences=1, repetition_penalty=1.0,
        eos_token_id=tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        suppress_tokens=vision_token_ids(tokenizer) + list(range(len(tokenizer), model.lm_head.weight.shape[0])),
    )

    def bare() -> list[torch.Tensor]:
        with torch.no_grad():
            return [model.generate(**b, generation_config=config) for b in batches]

    new_tokens = 0
    for b, seq in zip(batches, bare()):
        ours = generate_ids(model, processor, b, args.max_new_tokens).sequences
        assert torch.equal(seq, ours), "bare generate and generate_ids decoded different tokens"
        new_tokens += seq.shape[1] - b["input_ids"].shape[1]
    scored = score(model, processor, quads, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    with_tag = sum(s.samples[0].expected is not None for s in scored)

    def batched(readout: str):
        return lambda: [score_batch(model, processor, b, readout=readout, max_new_tokens=args.max_new_tokens)
                        for b in batches]

    def end_to_end(readout: str):
        return lambda: score(model, processor, quads, readout=readout, batch_size=args.batch_size,
                             max_new_tokens=args.max_new_tokens)

    seconds = best_of_interleaved(args.repeats, {
        "bare model.generate": bare,
        "score_batch parsed": batched("parsed"),
        "score_batch expected": batched("expected"),
        "score() parsed": end_to_end("parsed"),
        "score() expected": end_to_end("expected"),
        "encode_quadruples": lambda: [encode_quadruples(processor, chunk) for chunk in chunks],
    })
    wall_bare, cpu_bare = seconds["bare model.generate"]
    print(f"quads={len(quads)} batch_size={args.batch_size} max_new_tokens={args.max_new_tokens} "
          f"threads={args.threads} train_steps={args.train_steps} ({trained_s:.1f} s)")
    print(f"decode steps per batch (mean)={new_tokens / len(batches):.1f} "
          f"prompt tokens={batches[0]['input_ids'].shape[1]} parse rate={parse_rate(scored):.2f} "
          f"outputs with <score>={with_tag}/{len(scored)}")
    print(f"example output: {scored[0].text!r}")
    print(f"{'':22s} {'wall s':>7s} {'quads/s':>8s} {'ratio':>6s}   {'CPU s':>7s} {'quads/s':>8s} {'ratio':>6s}")
    for name, (wall, cpu) in seconds.items():
        print(f"{name:22s} {wall:7.3f} {len(quads) / wall:8.1f} {wall / wall_bare:6.3f}   "
              f"{cpu:7.3f} {len(quads) / cpu:8.1f} {cpu / cpu_bare:6.3f}")
    print("goal: score/bare <= 1.10 for the parsed readout")
    if args.clients:
        server_throughput(model, processor, quads, args)


def server_throughput(model, processor, quads: list[Quadruple], args: argparse.Namespace) -> None:
    """The reward server on a free 127.0.0.1 port: `--clients` threads each sending one quadruple per
    request, vs in-process `score()` on the same quadruples in `--batch-size` chunks."""
    import socket
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn

    from editr1.serve.app import create_app
    from editr1.serve.client import RewardClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(model, processor, max_batch=args.batch_size, max_wait_ms=args.max_wait_ms,
                     max_new_tokens=args.max_new_tokens, readout="parsed")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        client = RewardClient(f"http://127.0.0.1:{port}")
        client.score_quads(quads[:2])  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda q: client.score_quads([q]), quads))
        served = time.perf_counter() - started
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    started = time.perf_counter()
    score(model, processor, quads, readout="parsed", batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    local = time.perf_counter() - started
    print(f"server, {args.clients} concurrent clients (1 quad/request, max_wait_ms={args.max_wait_ms}): "
          f"{len(quads) / served:.1f} quads/s;  in-process score(): {len(quads) / local:.1f} quads/s;  "
          f"ratio server/in-process throughput: {local / served:.2f}")


if __name__ == "__main__":
    main()
