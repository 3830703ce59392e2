"""GCPO update cost: one GCPO update against a bare forward + backward + optimizer step on the same
sampled tokens, in the same run; the sampling (rollout) time is printed separately.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_step.py                     # tiny random RRM, small lake
    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_step.py --storage /tmp/gcpodata --model /tmp/gcpo_sft/model \\
        [--pairs 4] [--n-samples 8] [--max-new-tokens 512] [--repeats 3] [--readout expected]

Inputs. With --storage and --model: the first --pairs non-tie train pairs of that lake and that
saved RRM (an SFT model writes whole judgements, ~320 tokens). Without: a 40-pair world lake is
built in a temp dir and a tiny random RRM, which never stops, so every trace is --max-new-tokens
long (default 320, about a real judgement) and has no score (τ NaN: rewards 0, the update still
does all of its work).

Equal work. One rollout is sampled (timed: "sampling"); both paths then start from a copy of the
same weights and optimizer state and process the same B = 2·pairs·N traces:
  bare   the plain way: hidden = decoder(prompt + completion) over the 2PN full sequences;
         logits on the completion positions only; token-mean cross-entropy of the sampled tokens;
         backward; clip; AdamW step;
  gcpo   `gcpo_update` with one inner epoch: the rollout forward (each prompt once, its cache
         shared by its N traces: `editr1.training.rollout.token_logprobs`), the expected readout
         at `<score>`, rewards and advantages (`gcpo_rewards`, `group_advantages`), the PPO-clip
         token loss (`gcpo_loss`), backward, clip, AdamW step.
The prompt sharing is part of what GCPO's update does, so the ratio can be below 1.
Best of --repeats interleaved rounds (1 thread). Prints seconds and the ratio gcpo / bare
(goal <= 1.3). Each further inner epoch costs about one more update on the kept traces.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F
from transformers import BatchFeature

from editr1.coldstart import run_principles
from editr1.coldstart.checklists import load_principles
from editr1.config import CurateConfig, PrinciplesConfig
from editr1.curation import add_batch
from editr1.lake.catalog import curated_pairs
from editr1.lake.images import ImageLoader
from editr1.lake.objects import open_object_store
from editr1.models.rrm import TinyRRMSpec, load_rrm, repeat_batch, tiny_rrm
from editr1.rrm.corpus import rrm_corpus
from editr1.rrm.items import Context, Quadruple
from editr1.rrm.prompt import render_user_text
from editr1.teachers.factory import build_teacher
from editr1.teachers.params import TeacherConfig
from editr1.training.gcpo import GCPOConfig, gcpo_update
from editr1.training.rollout import Rollout, sample_rollout
from editr1.world import WorldConfig, write_batch


def small_lake(root: Path) -> Path:
    storage = root / "lake"
    write_batch(storage / "incoming" / "w", 40, 1, WorldConfig())
    add_batch(storage / "incoming" / "w", storage, CurateConfig())
    teacher = build_teacher(TeacherConfig(), storage, WorldConfig())
    run_principles(PrinciplesConfig(), storage, teacher, open_object_store("", storage),
                   storage / "rrm" / "principles.parquet")
    return storage


def load_pairs(storage: Path, n: int) -> list[tuple[Quadruple, Quadruple]]:
    images = ImageLoader(open_object_store("", storage))
    checklists = load_principles(storage / "rrm" / "principles.parquet")
    out = []
    for pair in curated_pairs(storage, "train", include_ties=False).to_pylist():
        if pair["context_id"] not in checklists:
            continue
        context = Context(pair["context_id"], pair["instruction"], images(pair["source_sha"]), pair["source_sha"])
        principles = tuple(checklists[pair["context_id"]])
        out.append((Quadruple(context, images(pair["chosen_sha"]), principles, pair["chosen_sha"]),
                    Quadruple(context, images(pair["rejected_sha"]), principles, pair["rejected_sha"])))
        if len(out) == n:
            break
    return out


def full_sequences(processor, rollout: Rollout) -> tuple[dict[str, torch.Tensor], int]:
    """Teacher-forced inputs of the 2PN traces: each prompt repeated N times, then its completion."""
    prompts = repeat_batch(processor, BatchFeature(rollout.prompts), rollout.n_samples)
    mask = rollout.completion_mask.to(prompts["attention_mask"].dtype)
    inputs = dict(prompts)
    inputs["input_ids"] = torch.cat([prompts["input_ids"], rollout.completion_ids], dim=1)
    inputs["attention_mask"] = torch.cat([prompts["attention_mask"], mask], dim=1)
    inputs["mm_token_type_ids"] = torch.cat([prompts["mm_token_type_ids"], torch.zeros_like(mask)], dim=1)
    return inputs, prompts["input_ids"].shape[1]


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, inputs: dict[str, torch.Tensor],
              prompt_length: int, rollout: Rollout) -> float:
    """Forward + token-mean CE on the sampled tokens + backward + clip + step; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    hidden = model.model(**inputs, use_cache=False).last_hidden_state
    logits = model.get_output_embeddings()(hidden[:, prompt_length - 1 : -1])
    labels = rollout.completion_ids.masked_fill(rollout.completion_mask == 0, -100)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", type=Path, help="A lake with principles (e.g. from `editr1 demo`).")
    parser.add_argument("--model", type=Path, help="A save_rrm directory (e.g. the SFT model).")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--n-samples", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Default 512 with --model, else 320.")
    parser.add_argument("--readout", default="parsed", choices=("expected", "parsed"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        storage = args.storage or small_lake(Path(tmp))
        pairs = load_pairs(storage, args.pairs)
        if args.model:
            model, processor = load_rrm(args.model)
            max_new = args.max_new_tokens or 512
        else:
            users = [render_user_text(q.instruction, q.principles) for pair in pairs for q in pair]
            model, processor = tiny_rrm(rrm_corpus([], users) * 5, Path(tmp) / "rrm", TinyRRMSpec())
            max_new = args.max_new_tokens or 320
        model.eval()
        cfg = GCPOConfig(n_samples=args.n_samples, inner_epochs=1, tau_readout=args.readout, max_steps=1,
                         max_seconds=0.0, skip_zero_advantage=False, max_new_tokens=max_new)

        # The frozen SFT reference of the KL (cfg.beta > 0) runs once per rollout, in the sampling time.
        reference = copy.deepcopy(model).requires_grad_(False) if cfg.beta > 0 else None
        started = time.perf_counter()
        rollout = sample_rollout(model, processor, pairs, n_samples=cfg.n_samples, temperature=cfg.temperature,
                                 max_new_tokens=max_new, seed=0, reference=reference)
        sampling = time.perf_counter() - started
        rows, length = rollout.completion_ids.shape
        inputs, prompt_length = full_sequences(processor, rollout)
        tokens = int(inputs["attention_mask"].sum())
        print(f"rollout: {len(pairs)} pairs x 2 sides x N={cfg.n_samples} = {rows} traces, mean length "
              f"{float(rollout.lengths.mean()):.0f} (max {length}), {tokens} tokens with prompts; "
              f"parse rate {float(rollout.parsed_ok.float().mean()):.2f}")
        print(f"sampling (generate + parse): {sampling:.2f} s  ({rows / sampling:.1f} traces/s)")

        start_state = copy.deepcopy(model.state_dict())
        times: dict[str, list[float]] = {"bare": [], "gcpo": []}
        for _ in range(args.repeats):
            for name in ("bare", "gcpo"):
                model.load_state_dict(start_state)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
                t0 = time.perf_counter()
                if name == "bare":
                    bare_step(model, optimizer, inputs, prompt_length, rollout)
                else:
                    gcpo_update(model, processor, optimizer, rollout, cfg)
                times[name].append(time.perf_counter() - t0)
        bare, gcpo = min(times["bare"]), min(times["gcpo"])
        print(f"bare forward+backward+step: {bare:.2f} s   gcpo update (1 epoch): {gcpo:.2f} s")
        print(f"ratio gcpo / bare: {gcpo / bare:.2f}  (goal <= 1.3)")
        print(f"one GCPO step ~ sampling {sampling:.1f} s + update {gcpo:.1f} s per inner epoch")


if __name__ == "__main__":
    main()
