"""The reward server (the RRM over HTTP, batched; OpenAI-compatible chat) and its client.

    from editr1.serve.app import create_app, serve          # the server (imports torch and the model code)
    from editr1.serve.client import RewardClient, RewardItem # the client (light: httpx + PIL)

Nothing is imported here, so a rollout worker that only needs the client does not load the server.
"""
