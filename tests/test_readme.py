"""The README's commands, run as a newcomer pastes them: `make run` in one terminal, the rest in another.

On a copy of the checkout without .env or db.sqlite3 (a fresh clone) that shares
this virtualenv, with none of the app's settings in the environment.
"""

import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import BASE_DIR, call, free_port, poll_until

README = BASE_DIR / "README.md"


def readme_sh_lines() -> list[str]:
    """Every command line of the README's ```sh blocks (comments and continuations joined)."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def manage_commands_to_paste() -> list[str]:
    """The README's `.venv/bin/python manage.py` lines meant to be pasted as they are: no placeholder in them."""
    commands = []
    for line in readme_sh_lines():
        if ".venv/bin/python manage.py" not in line:
            continue
        if re.search(r"\[|\b[A-Z][A-Z_]{3,}\b(?!=)", line.split("#")[0].replace("$(", "")):
            continue  # a synopsis: USERNAME, SESSION_ID, [--dry-run]
        commands.append(line.split(" #")[0])
    return commands


def fresh_clone(tmp_path: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) in `tmp_path`, with this .venv linked in."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=BASE_DIR,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    clone = tmp_path / "clone"
    for name in filter(None, (entry.decode() for entry in listed)):
        source = BASE_DIR / name
        if source.is_file():
            target = clone / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    (clone / ".venv").symlink_to(BASE_DIR / ".venv")
    assert not (clone / ".env").exists() and not (clone / "db.sqlite3").exists()
    return clone


def newcomer_env() -> dict[str, str]:
    """A shell's environment: none of the app's settings, nor pytest's ENV_FILE."""
    settings = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), re.M))
    return {
        key: value
        for key, value in os.environ.items()
        if key not in settings | {"ENV_FILE"} and not key.startswith(("RATE_LIMIT_", "GUNICORN_", "DJANGO_"))
    }


def test_the_env_file_make_writes_is_ignored_by_git_and_docker():
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=BASE_DIR).returncode == 0
    assert ".env" in (BASE_DIR / ".dockerignore").read_text().split()


def test_the_readme_shows_pasteable_manage_commands():
    commands = manage_commands_to_paste()
    assert any("issue_token alice --create" in command for command in commands)
    # No bare `python manage.py` for this checkout: a newcomer's `python` has no Django.
    assert not [line for line in readme_sh_lines() if re.match(r"python3? manage\.py", line)]


@pytest.mark.server
def test_a_second_terminal_runs_the_readmes_commands_while_make_run_serves(tmp_path):
    clone = fresh_clone(tmp_path)
    env = newcomer_env()
    port = free_port()
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        # Its own process group: make, runserver and runserver's reloader stop together.
        server = subprocess.Popen(
            ["make", "run", f"PORT={port}"],
            cwd=clone,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def serving() -> bool:
            assert server.poll() is None, log.read_text()
            try:
                return call(port, "GET", "/healthz", timeout=5)[0] == 200
            except OSError:
                return False

        poll_until(serving, timeout=120, what=f"make run serving (log: {log})", interval=0.2)
        written = dict(line.split("=", 1) for line in (clone / ".env").read_text().splitlines() if "=" in line)
        assert written["DEBUG"] == "true" and len(written["SECRET_KEY"]) >= 50

        def paste(command: str, **extra: str) -> subprocess.CompletedProcess:
            script = f"set -o pipefail; {command}"
            return subprocess.run(
                ["bash", "-c", script], cwd=clone, env={**env, **extra}, capture_output=True, text=True, timeout=120
            )

        for command in manage_commands_to_paste():
            result = paste(command)
            assert result.returncode == 0, f"{command}: {result.stderr}"
        token = paste(".venv/bin/python manage.py issue_token alice --create | tail -n 1").stdout.strip()
        status, _, _ = call(port, "GET", "/api/chat/sessions", {"Authorization": f"Bearer {token}"})
        assert status == 200
        # The README's createsuperuser asks its questions; the same command answered from the environment.
        answers = {
            "DJANGO_SUPERUSER_USERNAME": "root",
            "DJANGO_SUPERUSER_PASSWORD": "a-long-pass-phrase-9",
            "DJANGO_SUPERUSER_EMAIL": "root@example.com",
        }
        created = paste(shlex.join([".venv/bin/python", "manage.py", "createsuperuser", "--noinput"]), **answers)
        assert created.returncode == 0, created.stderr
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_the_env_file_gives_defaults_and_the_environment_wins(tmp_path):
    env_file = tmp_path / "dev.env"
    env_file.write_text("# a comment\nexport DEBUG=true\nSECRET_KEY='from-the-file-0123456789'\n")
    check = [str(BASE_DIR / ".venv" / "bin" / "python"), "manage.py", "shell", "-c"]
    show = "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY)"
    env = {**newcomer_env(), "ENV_FILE": str(env_file)}

    def run(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*check, show], cwd=BASE_DIR, env={**env, **extra}, capture_output=True, text=True, timeout=60
        )

    assert run().stdout.splitlines()[-1].split() == ["True", "from-the-file-0123456789"]
    assert run(SECRET_KEY="from-the-environment").stdout.splitlines()[-1].split() == ["True", "from-the-environment"]
    env_file.write_text("DEBUG=false\n")
    refused = run()
    assert refused.returncode != 0 and "SECRET_KEY must be set unless DEBUG is on" in refused.stderr
    env_file.write_text("not a setting\n")
    assert "is not KEY=VALUE" in run().stderr
