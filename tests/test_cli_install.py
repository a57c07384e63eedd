"""``sipbridge install-service`` / ``print-unit`` into temporary roots, without systemd."""

from __future__ import annotations

import os
import re
import shutil
import stat
import tomllib
from pathlib import Path

import pytest

from sipbridge.cli import main
from sipbridge.settings import ServiceSettings, load_settings
from sipbridge.systemd import (
    InstallError,
    default_exec_start,
    install_service,
    packaged_unit,
    render_unit,
    useradd_command,
)

REPO = Path(__file__).resolve().parents[1]
EXEC = ["/opt/sipbridge/bin/sipbridge", "serve", "--config", "/etc/sipbridge/settings.toml"]


def unit_values(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (comments skipped), every value of each key in order."""
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return float(match[1])


# --------------------------------------------------------------------------- the packaged unit


def test_packaged_unit_is_a_hardened_notify_service() -> None:
    values = unit_values(packaged_unit())
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "KillMode": "mixed",
        "User": "sipbridge",
        "StateDirectory": "sipbridge",
        "WorkingDirectory": "/var/lib/sipbridge",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "MemoryDenyWriteExecute": "no",
        "LimitNOFILE": "65536",
        "WantedBy": "multi-user.target",
    }
    for key, value in expected.items():
        assert values.get(key) == [value], key
    assert values["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert seconds(values["WatchdogSec"][0]) > 0
    # The gateway's own bound must come first, so that it exits with a reason.
    assert seconds(values["TimeoutStopSec"][0]) > ServiceSettings().stop_timeout


def test_unit_is_package_data() -> None:
    with (REPO / "pyproject.toml").open("rb") as fh:
        patterns = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["sipbridge"]
    assert "data/*.service" in patterns
    assert (REPO / "sipbridge" / "data" / "sipbridge.service").read_text() == packaged_unit()


def test_render_sets_exec_user_group_and_paths() -> None:
    text = render_unit(
        packaged_unit(),
        exec_start=[
            "/srv/my env/bin/python",
            "-m",
            "sipbridge",
            "serve",
            "--config",
            "/e/100%.toml",
        ],
        user="gw",
        read_write_paths=["/srv/recordings"],
    )
    values = unit_values(text)
    assert values["ExecStart"] == [
        '"/srv/my env/bin/python" -m sipbridge serve --config /e/100%%.toml'
    ]
    assert values["User"] == ["gw"]
    assert values["Group"] == ["gw"]
    assert values["ReadWritePaths"] == ["/srv/recordings"]
    lines = text.splitlines()
    assert (
        lines[lines.index("ReadWritePaths=/srv/recordings") - 1]
        == "#ReadWritePaths=/srv/recordings"
    )


def test_render_without_paths_leaves_only_the_example() -> None:
    values = unit_values(render_unit(packaged_unit(), exec_start=EXEC, user="sipbridge"))
    assert "ReadWritePaths" not in values
    assert values["ExecStart"] == [" ".join(EXEC)]


def test_render_rejects_a_bad_user_and_a_broken_template() -> None:
    with pytest.raises(InstallError) as err:
        render_unit(packaged_unit(), exec_start=EXEC, user="root;rm")
    assert str(err.value) == "not a valid user name: 'root;rm'"
    with pytest.raises(InstallError) as err:
        render_unit("[Service]\nUser=x\n", exec_start=EXEC, user="x")
    assert str(err.value) == "the unit template has no ExecStart=, Group= line"
    with pytest.raises(InstallError) as err:
        render_unit(
            "ExecStart=x\nUser=x\nGroup=x\n", exec_start=EXEC, user="x", read_write_paths=["/a"]
        )
    assert str(err.value) == "the unit template has no #ReadWritePaths= line"


def test_default_exec_start_uses_this_installation() -> None:
    argv = default_exec_start("/etc/x.toml")
    assert argv[-3:] == ["serve", "--config", "/etc/x.toml"]
    assert Path(argv[0]).is_file()
    assert os.access(argv[0], os.X_OK)


# --------------------------------------------------------------------------- install-service


def test_install_into_an_empty_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["install-service", "--prefix", str(tmp_path), "--exec", EXEC[0]])
    assert code == 0
    unit = tmp_path / "etc/systemd/system/sipbridge.service"
    config = tmp_path / "etc/sipbridge/settings.toml"
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert stat.S_IMODE(config.stat().st_mode) == 0o640  # may hold passwords and the token
    values = unit_values(unit.read_text())
    assert values["ExecStart"] == [" ".join(EXEC)]
    assert values["User"] == ["sipbridge"]
    settings = load_settings(config, env={})  # the starter settings are valid
    assert settings.record.directory == "recordings"
    assert settings.service.stop_timeout == 20.0
    out = capsys.readouterr().out
    assert f"wrote {unit}" in out
    assert f"wrote {config} (starter settings: edit it)" in out
    assert "next: systemctl daemon-reload && systemctl enable --now sipbridge" in out
    # Nothing outside the root, nothing but these two files inside it.
    assert sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()
    ) == [
        "etc/sipbridge/settings.toml",
        "etc/systemd/system/sipbridge.service",
    ]


def test_install_keeps_existing_settings_and_opens_the_record_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc/gw/gw.toml"
    config.parent.mkdir(parents=True)
    original = '[record]\ndirectory = "/srv/rec"\n'
    config.write_text(original)
    code = main(
        [
            "install-service",
            "--prefix",
            str(tmp_path),
            "--config",
            "/etc/gw/gw.toml",
            "--user",
            "gw",
        ]
    )
    assert code == 0
    assert config.read_text() == original  # never overwritten
    assert (tmp_path / "srv/rec").is_dir()
    values = unit_values((tmp_path / "etc/systemd/system/sipbridge.service").read_text())
    assert values["ReadWritePaths"] == ["/srv/rec"]
    assert values["User"] == ["gw"]
    assert values["ExecStart"][0].endswith(" serve --config /etc/gw/gw.toml")
    out = capsys.readouterr().out
    assert f"kept {config}" in out
    assert "ReadWritePaths=/srv/rec (the [record] directory)" in out


def test_record_directory_in_the_state_directory_needs_no_extra_path(tmp_path: Path) -> None:
    config = tmp_path / "etc/sipbridge/settings.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[record]\ndirectory = "/var/lib/sipbridge/rec"\n')
    plan = install_service(prefix=tmp_path, exec_start=EXEC)
    assert plan.read_write_paths == []
    assert not plan.config_written


def test_install_reports_bad_settings_and_relative_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc/sipbridge/settings.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[sip]\nprot = 1\n")
    assert main(["install-service", "--prefix", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f'sipbridge: install-service: {config}: unknown key "sip.prot"\n'
    )
    assert not (tmp_path / "etc/systemd").exists()
    assert main(["install-service", "--prefix", str(tmp_path), "--config", "s.toml"]) == 1
    assert capsys.readouterr().err == (
        "sipbridge: install-service: --config must be an absolute path, got 's.toml'\n"
    )


def test_install_warns_about_a_program_hidden_by_protect_home(tmp_path: Path) -> None:
    plan = install_service(prefix=tmp_path, exec_start=["/root/venv/bin/sipbridge", "serve"])
    assert plan.warnings == [
        "/root/venv/bin/sipbridge is under a directory ProtectHome=yes hides from the service: "
        "install sipbridge elsewhere (e.g. a virtualenv in /opt/sipbridge)"
    ]


def test_create_user_runs_useradd_once(tmp_path: Path) -> None:
    commands: list[list[str]] = []
    plan = install_service(prefix=tmp_path, exec_start=EXEC, create_user=True, run=commands.append)
    assert plan.user_created
    assert commands == [useradd_command("sipbridge", prefix=str(tmp_path))]
    assert commands[0][-3:] == ["--prefix", str(tmp_path.resolve()), "sipbridge"]
    # Once the user is in the root's passwd, it is not created again.
    (tmp_path / "etc/passwd").write_text(
        "sipbridge:x:999:995::/var/lib/sipbridge:/usr/sbin/nologin\n"
    )
    again = install_service(prefix=tmp_path, exec_start=EXEC, create_user=True, run=commands.append)
    assert not again.user_created
    assert len(commands) == 1


def test_useradd_command_for_the_real_root() -> None:
    assert useradd_command("sipbridge") == [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/var/lib/sipbridge",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "sipbridge SIP/RTP media gateway",
        "sipbridge",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="useradd --prefix needs root")
def test_create_user_with_the_real_useradd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("useradd") is None:
        pytest.fail("useradd not found: install the Debian package 'passwd'")
    etc = tmp_path / "etc"
    etc.mkdir()
    for name in ("passwd", "group", "shadow", "gshadow", "login.defs"):
        if Path("/etc", name).exists():
            shutil.copy(Path("/etc", name), etc / name)
    (tmp_path / "etc/gw.toml").write_text('[record]\ndirectory = "/srv/rec"\n')
    host_passwd = Path("/etc/passwd").read_text()
    code = main(
        ["install-service", "--prefix", str(tmp_path), "--create-user", "--config", "/etc/gw.toml"]
    )
    assert code == 0, capsys.readouterr().err
    assert "created system user sipbridge" in capsys.readouterr().out
    [entry] = [
        line.split(":")
        for line in (etc / "passwd").read_text().splitlines()
        if line.startswith("sipbridge:")
    ]
    assert entry[5:] == ["/var/lib/sipbridge", "/usr/sbin/nologin"]
    assert any(line.startswith("sipbridge:") for line in (etc / "group").read_text().splitlines())
    # The record directory belongs to the new user.
    assert (tmp_path / "srv/rec").stat().st_uid == int(entry[2])
    assert Path("/etc/passwd").read_text() == host_passwd  # the host's users untouched


def test_print_unit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["print-unit", "--user", "gw", "--exec", "/usr/bin/sipbridge"]) == 0
    out = capsys.readouterr().out
    assert out == render_unit(
        packaged_unit(),
        exec_start=["/usr/bin/sipbridge", "serve", "--config", "/etc/sipbridge/settings.toml"],
        user="gw",
    )
