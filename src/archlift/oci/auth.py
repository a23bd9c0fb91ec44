"""Registry credentials and ``WWW-Authenticate`` challenges.

Where credentials come from, first match wins, per registry host:

1. ``ARCHLIFT_AUTH_<HOST>=user:password`` where ``<HOST>`` is the host (with
   its port) upper-cased, every character that is not a letter or digit
   replaced by ``_`` (``127.0.0.1:5000`` -> ``ARCHLIFT_AUTH_127_0_0_1_5000``);
2. ``ARCHLIFT_REGISTRY_USERNAME`` and ``ARCHLIFT_REGISTRY_PASSWORD`` (any host);
3. the docker config (``$DOCKER_CONFIG/config.json``, else
   ``~/.docker/config.json``): ``credHelpers.<host>``, then ``auths.<host>``
   (``auth`` is base64 ``user:password``; ``identitytoken`` is an OAuth2
   refresh token), then ``credsStore``; helpers run as
   ``docker-credential-<name> get``.

Secrets never appear in ``repr``, messages or logs.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RegistryError

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)  # an OAuth2 refresh token
    source: str = ""  # where they came from, for messages (never the secret)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.identity_token)


NO_CREDENTIALS = Credentials()


def env_name(host: str) -> str:
    return "ARCHLIFT_AUTH_" + re.sub(r"[^A-Za-z0-9]", "_", host).upper()


def _norm_key(key: str) -> str:
    key = re.sub(r"^[a-z]+://", "", key)
    return key.split("/", 1)[0]


def docker_config_path(docker_config: str | None = None) -> Path:
    """``docker_config`` may be a directory (like ``$DOCKER_CONFIG``) or a file."""
    base = docker_config or os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    path = Path(base)
    return path if path.suffix == ".json" else path / "config.json"


def _load_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RegistryError(f"reading docker config {path}: {e.__class__.__name__}") from None
    return data if isinstance(data, dict) else {}


def _helper(name: str, host: str) -> Credentials:
    import subprocess  # here: most runs never call a helper

    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run([program, "get"], input=host, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RegistryError(
            f"credential helper '{program}' named in the docker config is not installed",
            hint="install it or edit the docker config",
        ) from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"credential helper '{program}' did not answer within 30 s") from None
    if proc.returncode != 0:
        if "credentials not found" in (proc.stdout + proc.stderr).lower():
            return NO_CREDENTIALS
        # never echo helper output: it may hold a secret
        raise RegistryError(f"credential helper '{program}' failed for {host} (exit {proc.returncode})")
    try:
        data = json.loads(proc.stdout)
        user, secret = str(data.get("Username", "")), str(data.get("Secret", ""))
    except (ValueError, AttributeError):
        raise RegistryError(f"credential helper '{program}' printed something that is not JSON credentials") from None
    if user == "<token>":
        return Credentials(identity_token=secret, source=program)
    return Credentials(user, secret, source=program)


def _from_auths(auths: dict[str, Any], host: str, path: Path) -> Credentials:
    wanted = {host} | (set(DOCKER_HUB_KEYS) if host in DOCKER_HUB_KEYS else set())
    for key, entry in auths.items():
        if (_norm_key(key) not in wanted and key not in wanted) or not isinstance(entry, dict):
            continue
        token = str(entry.get("identitytoken", ""))
        user, password = str(entry.get("username", "")), str(entry.get("password", ""))
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"{path}: auths.{key}.auth is not base64 'user:password'") from None
        if token or user or password:
            return Credentials(user, password, token, source=str(path))
    return NO_CREDENTIALS


def lookup(host: str, docker_config: str | None = None, environ: dict[str, str] | None = None) -> Credentials:
    """The credentials to use for ``host`` (``NO_CREDENTIALS`` when there are none)."""
    env = os.environ if environ is None else environ
    scoped = env.get(env_name(host))
    if scoped:
        user, sep, password = scoped.partition(":")
        if not sep:
            raise RegistryError(f"{env_name(host)} must be 'user:password'")
        return Credentials(user, password, source=env_name(host))
    if env.get("ARCHLIFT_REGISTRY_USERNAME") or env.get("ARCHLIFT_REGISTRY_PASSWORD"):
        return Credentials(
            env.get("ARCHLIFT_REGISTRY_USERNAME", ""),
            env.get("ARCHLIFT_REGISTRY_PASSWORD", ""),
            source="ARCHLIFT_REGISTRY_USERNAME",
        )
    path = docker_config_path(docker_config)
    config = _load_config(path)
    helpers = config.get("credHelpers") or {}
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if _norm_key(key) == host:
                return _helper(str(name), host)
    auths = config.get("auths") or {}
    found = _from_auths(auths, host, path) if isinstance(auths, dict) else NO_CREDENTIALS
    if found:
        return found
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        return _helper(store, host)
    return NO_CREDENTIALS


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" | "bearer" | other, lower case
    params: dict[str, str]


_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenge(header: str) -> Challenge:
    """Parse one ``WWW-Authenticate`` value: ``Bearer realm="...",service="...",scope="..."``."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            break
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        pos = m.end()
    return Challenge(scheme.lower(), params)
