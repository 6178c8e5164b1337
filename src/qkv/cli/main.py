"""``qkv`` entry point: one thin function per command, dispatched from a table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class UsageError(Exception):
    """A problem with the user's input: printed as one line on stderr, exit code 2."""


def _cmd_demo(args: argparse.Namespace) -> int:
    from qkv.cli.demo import run_attention_demo

    run_attention_demo(seed=args.seed)
    return 0


def _build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    parser = argparse.ArgumentParser(prog="qkv", description="Attention and the Transformer, end to end.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    table: dict[str, Callable[[argparse.Namespace], int]] = {}

    p = sub.add_parser("demo", help="show the attention core on a small example")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    table["demo"] = _cmd_demo
    return parser, table


def main(argv: Sequence[str] | None = None) -> int:
    parser, table = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return table[args.command](args)
    except UsageError as e:
        print(f"qkv {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
