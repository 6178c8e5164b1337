"""``qkv serve``: a trained run behind a local HTTP API (FastAPI + uvicorn, the ``qkv[serve]`` extra).

``create_app(run)`` builds the app: ``GET /v1/models``, ``POST /v1/completions`` (language models and
translators, streamed as server-sent events), ``POST /v1/classify`` and ``POST /v1/embeddings`` (encoders)
and a playground page at ``GET /``. Requests are decoded together, one token per step, by one engine thread.
"""

from qkv.serve.app import create_app

__all__ = ["create_app"]
