"""``qkv serve``: a trained run behind a local HTTP API (FastAPI + uvicorn, the ``qkv[serve]`` extra).

``create_app(run)`` builds the app: ``GET /v1/models``, ``POST /v1/completions`` (language models and
translators, streamed as server-sent events), ``POST /v1/classify`` and ``POST /v1/embeddings`` (encoders)
and a playground page at ``GET /``. Requests are decoded together, one token per step, by one engine thread.
FastAPI is imported only when ``create_app`` is first used, so the rest of the package imports without it.
"""

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from qkv.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'qkv.serve' has no attribute {name!r}")
