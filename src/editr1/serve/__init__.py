"""The reward server (the RRM over HTTP, batched; OpenAI-compatible chat) and its client.

    from editr1.serve import create_app, RewardClient      # see editr1.serve.app / editr1.serve.client
"""

from editr1.serve.app import create_app, serve
from editr1.serve.client import RewardClient, RewardItem, RewardResult, RewardServerError

__all__ = ["RewardClient", "RewardItem", "RewardResult", "RewardServerError", "create_app", "serve"]
