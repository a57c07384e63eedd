"""The ``sipbridge`` command.

``sipbridge serve [--config PATH]`` runs the gateway; ``check-config PATH``
validates a settings file; ``install-service`` installs the systemd unit (and,
with ``--create-user``, its system user) into a root, ``/`` by default;
``print-unit`` prints that unit instead (docs/operations.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sipbridge import __version__
from sipbridge.settings import SettingsError, load_settings

__all__ = ["main"]


def _add_unit_options(parser: argparse.ArgumentParser) -> None:
    from sipbridge.systemd import DEFAULT_CONFIG, DEFAULT_USER

    parser.add_argument(
        "--user",
        default=DEFAULT_USER,
        help=f"system user (and group) the service runs as (default {DEFAULT_USER})",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=DEFAULT_CONFIG,
        help=f"settings file the service reads, absolute (default {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--exec",
        metavar="PROGRAM",
        dest="program",
        help="the sipbridge program in ExecStart= (default: this installation's)",
    )


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
    install = commands.add_parser(
        "install-service",
        help="write the systemd unit (and a starter settings file) into a root",
        description=(
            "Writes ROOT/etc/systemd/system/sipbridge.service and, unless it exists, a "
            "starter settings file at ROOT/CONFIG. Needs no running systemd; afterwards run "
            "`systemctl daemon-reload && systemctl enable --now sipbridge`."
        ),
    )
    _add_unit_options(install)
    install.add_argument("--prefix", metavar="ROOT", default="/", help="install root (default /)")
    install.add_argument(
        "--create-user",
        action="store_true",
        help="create the system user with useradd unless it exists",
    )
    unit = commands.add_parser("print-unit", help="print the systemd unit to stdout")
    _add_unit_options(unit)
    return parser


def _unit_command(args: argparse.Namespace) -> int:
    from sipbridge.systemd import (
        InstallError,
        default_exec_start,
        install_service,
        packaged_unit,
        render_unit,
    )

    exec_start = default_exec_start(args.config)
    if args.program:
        exec_start = [args.program, *exec_start[exec_start.index("serve") :]]
    try:
        if args.command == "print-unit":
            sys.stdout.write(render_unit(packaged_unit(), exec_start=exec_start, user=args.user))
            return 0
        plan = install_service(
            user=args.user,
            config=args.config,
            prefix=args.prefix,
            exec_start=exec_start,
            create_user=args.create_user,
        )
    except (InstallError, OSError) as exc:
        print(f"sipbridge: install-service: {exc}", file=sys.stderr)
        return 1
    if plan.user_created:
        print(f"created system user {args.user}")
    print(f"wrote {plan.unit_path}")
    if plan.config_written:
        print(f"wrote {plan.config_path} (starter settings: edit it)")
    else:
        print(f"kept {plan.config_path}")
    for path in plan.read_write_paths:
        print(f"ReadWritePaths={path} (the [record] directory)")
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("next: systemctl daemon-reload && systemctl enable --now sipbridge")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("install-service", "print-unit"):
        return _unit_command(args)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"sipbridge: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{args.config}: OK")
        return 0
    from sipbridge.service import run

    return run(settings)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
