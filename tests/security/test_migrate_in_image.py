"""`db migrate` as the image runs it: uid 10001 (here: nobody) under a root-owned, read-only
state directory. Before, it died with a PermissionError traceback writing the generated
worker password; now it says what to set, and works with the passwords as secret files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from sinkfleet.config import Settings
from sinkfleet.sink.postgres.connect import connect
from sinkfleet.sink.postgres.group_roles import SERVICE_ROLES, group_role, login_of
from tests.support.catalogue import TestCatalogue, make_catalogue

pytestmark = pytest.mark.integration
NOBODY = 65534


def _migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-m", "sinkfleet", "db", "migrate"],
        env=env, capture_output=True, text=True, timeout=120, check=False)


def _image_like_home(stack: Settings) -> tuple[Path, TestCatalogue]:
    base = Path(tempfile.mkdtemp(prefix="sinkfleet-image-"))
    base.chmod(0o755)  # readable, not writable, by nobody: like the image's /app
    return base, make_catalogue(base, stack)


def _secret_files(stack: Settings, base: Path, logins: list[str]) -> Path:
    """The logins' passwords as Docker/Kubernetes mount them: a file per login."""
    secrets = base / "secrets"
    secrets.mkdir(mode=0o755)
    for login in logins:
        shared = stack.login_secret_path(login)  # keep the shared logins' passwords
        text = shared.read_text() if shared.is_file() else uuid.uuid4().hex
        (secrets / login).write_text(text)
        (secrets / login).chmod(0o644)
    return secrets


async def test_migrate_as_an_unprivileged_user_with_a_read_only_state_dir(
        stack: Settings) -> None:
    base, tc = _image_like_home(stack)
    database = f"sinkfleet_image_{uuid.uuid4().hex[:8]}"
    owner_pw = stack.secret("pg_password")
    assert owner_pw is not None
    env = {"PATH": os.environ["PATH"], "HOME": "/tmp", "SINKFLEET_HOME": str(tc.root),
           "SINKFLEET_STATE_DIR": str(tc.root / ".sinkfleet"),
           "SINKFLEET_PG_HOST": stack.pg_host, "SINKFLEET_PG_PORT": str(stack.pg_port),
           "SINKFLEET_PG_USER": stack.pg_user, "SINKFLEET_PG_DATABASE": database,
           "SINKFLEET_PG_PASSWORD": owner_pw.get_secret_value()}
    admin = await connect(stack)
    await admin.execute(f"CREATE DATABASE {database}")
    role = group_role(tc.group)
    try:
        out = _migrate(env)  # the image as shipped, no passwords given
        assert out.returncode != 0
        assert "Traceback" not in out.stderr + out.stdout, out.stderr
        assert ("error: cannot store a generated password for PostgreSQL login"
                in out.stderr), out.stderr
        assert "SINKFLEET_PG_SECRETS_DIR" in out.stderr
        assert not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1",
                                        login_of(role))

        secrets = _secret_files(stack, base, [login_of(role), *map(login_of, SERVICE_ROLES)])
        out = _migrate({**env, "SINKFLEET_PG_SECRETS_DIR": str(secrets),
                        "SINKFLEET_PG_WORKER_USER": ""})
        assert out.returncode == 0, out.stderr
        assert f"created login role {login_of(role)}" in out.stdout
        assert ".sinkfleet" not in os.listdir(tc.root)  # nothing written
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        for name in (login_of(role), role):
            await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()
        shutil.rmtree(base)
