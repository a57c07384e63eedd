"""The ``sipbridge`` command: ``sipbridge serve [--config PATH]``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sipbridge import __version__
from sipbridge.settings import SettingsError, load_settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipbridge", description="SIP/RTP media gateway")
    parser.add_argument("--version", action="version", version=f"sipbridge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway and its REST API")
    serve.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get("SIPBRIDGE_SETTINGS"),
        help="settings file (TOML); defaults built in when absent",
    )
    check = commands.add_parser("check-config", help="validate a settings file and exit")
    check.add_argument("config", metavar="PATH")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: OK")
        return 0
    from sipbridge.service import run

    run(settings)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
