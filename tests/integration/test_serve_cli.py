"""`editr1 serve` as a user runs it: a process on a free 127.0.0.1 port, bearer token from the
environment, stopped by PID."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch
from PIL import Image

from editr1.models import save_rrm, tiny_rrm
from tests.integration.conftest import free_port, wait_for_port

EDITR1 = str(Path(sys.executable).parent / "editr1")


def data_url(color) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (56, 56), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_serve_command_with_token(tmp_path):
    torch.manual_seed(0)
    model, processor = tiny_rrm(["a corpus <score>5</score> of words"] * 10, tmp_path / "tok")
    save_rrm(model, processor, tmp_path / "model")
    port = free_port()
    env = {**os.environ, "EDITR1_REWARD_TOKEN": "s3cret"}
    proc = subprocess.Popen([EDITR1, "serve", "--model", str(tmp_path / "model"), "--port", str(port),
                             "--max-new-tokens", "16"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=120)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health", timeout=30).json()["status"] == "ok"
        item = {"source_image": data_url((200, 0, 0)), "edited_image": data_url((0, 0, 200)),
                "instruction": "make the square blue"}
        assert httpx.post(f"{base}/v1/score", json={"items": [item]}, timeout=60).status_code == 401
        ok = httpx.post(f"{base}/v1/score", json={"items": [item]}, timeout=60,
                        headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        (result,) = ok.json()["results"]
        assert set(result) >= {"score", "parse_ok", "principles", "reasoning"}
        assert len(result["principles"]) == 10
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    time.sleep(0.1)
