"""The ``qkv`` command: a dispatch table of thin typed functions."""

from qkv.cli.main import main

__all__ = ["main"]
