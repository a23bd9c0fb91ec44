"""Registry credentials and ``WWW-Authenticate`` challenges.

Where credentials come from, per registry host (``host[:port]`` exactly as the
image reference writes it); each environment variable names exactly one host:

1. ``ARCHLIFT_AUTH_<HOST>=user:password``. ``<HOST>`` spells the host without
   loss: letters upper-cased, digits kept, each ``.`` as ``_``, each ``-`` as
   ``__``, the ``:`` before the port as ``___``
   (``registry.example.com`` -> ``ARCHLIFT_AUTH_REGISTRY_EXAMPLE_COM``,
   ``127.0.0.1:5000`` -> ``ARCHLIFT_AUTH_127_0_0_1___5000``,
   ``my-registry:5000`` -> ``ARCHLIFT_AUTH_MY__REGISTRY___5000``). An
   ``ARCHLIFT_AUTH_`` name that spells no host (such as archlift 0.1's lossy
   ``ARCHLIFT_AUTH_127_0_0_1_5000``) is refused, with the right name in the hint.
2. ``ARCHLIFT_REGISTRY_HOST`` with ``ARCHLIFT_REGISTRY_USERNAME`` and
   ``ARCHLIFT_REGISTRY_PASSWORD``: the pair is for that one host. The pair
   without the host (or the host without the pair) is refused, and so is a host
   that also has its own ``ARCHLIFT_AUTH_<HOST>``.
3. the docker config (``$DOCKER_CONFIG/config.json``, else
   ``~/.docker/config.json``): ``credHelpers.<host>``, then ``auths.<host>``
   (``auth`` is base64 ``user:password``; ``identitytoken`` is an OAuth2
   refresh token), then ``credsStore``; helpers run as
   ``docker-credential-<name> get``.

The client sends them only to that host's own origin (see ``archlift.oci.client``).
Secrets never appear in ``repr``, messages or logs.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RegistryError, UsageError

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


ENV_PREFIX = "ARCHLIFT_AUTH_"
HOST_VAR, USER_VAR, PASSWORD_VAR = "ARCHLIFT_REGISTRY_HOST", "ARCHLIFT_REGISTRY_USERNAME", "ARCHLIFT_REGISTRY_PASSWORD"
_HOST_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*(?::[0-9]+)?", re.ASCII)
_SEPARATORS = {".": "_", "-": "__", ":": "___"}


def env_name(host: str) -> str:
    """The ``ARCHLIFT_AUTH_<HOST>`` variable of ``host``; "" for a host it cannot spell (an
    IPv6 literal: use ``ARCHLIFT_REGISTRY_HOST`` and its pair)."""
    if not _HOST_RE.fullmatch(host.lower()):
        return ""
    return ENV_PREFIX + "".join(_SEPARATORS.get(c, c) for c in host.upper())


def host_of(name: str) -> str | None:
    """The host an ``ARCHLIFT_AUTH_<HOST>`` variable names (lower case), or None when it spells none."""
    body = name[len(ENV_PREFIX) :] if name.startswith(ENV_PREFIX) else ""
    if not re.fullmatch(r"[A-Z0-9]+(?:_+[A-Z0-9]+)*", body, re.ASCII):
        return None
    decoded = {1: ".", 3: ":"}
    out = []
    for part in re.split(r"(_+)", body):
        if part.startswith("_"):
            n = len(part)
            sep = "-" * (n // 2) if n % 2 == 0 else decoded.get(n)
            if sep is None:
                return None
            out.append(sep)
        else:
            out.append(part.lower())
    host = "".join(out)
    if not _HOST_RE.fullmatch(host) or host.count(":") > 1:
        return None
    name = host.split(":", 1)[0]
    if name.rsplit(".", 1)[-1].isdigit() and not _is_ipv4(name):  # a numeric top-level label: a port, badly spelt
        return None
    return host


def _is_ipv4(name: str) -> bool:
    import ipaddress

    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def env_hint(host: str) -> str:
    """How to give credentials for ``host`` (for an error's hint)."""
    name = env_name(host)
    scoped = f"set {name}=user:password, or " if name else "set "
    return f"log in with 'docker login {host}', or {scoped}{HOST_VAR}={host} with {USER_VAR} and {PASSWORD_VAR}"


def _respelt(var: str) -> str:
    """What an ``ARCHLIFT_AUTH_`` name that spells no host probably meant: archlift <= 0.1
    wrote ``127.0.0.1:5000`` as ``127_0_0_1_5000`` (lossy: ``a-b`` and ``a.b`` shared a name)."""
    guess = re.sub(r"_([0-9]+)$", r"___\1", var)
    host = host_of(guess)
    return f"{host} is spelt {guess}" if host else "see 'archlift.oci.auth' in the docs (README: credentials)"


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """``UsageError`` when a credential variable names no registry host, or not exactly one
    (``ARCHLIFT_REGISTRY_USERNAME``/``_PASSWORD`` without ``ARCHLIFT_REGISTRY_HOST``)."""
    _from_environment("", os.environ if environ is None else environ)


def _from_environment(host: str, env: Mapping[str, str]) -> Credentials:
    """The credentials the environment gives ``host`` (``NO_CREDENTIALS`` when none, and for
    ``host`` ""); ``UsageError`` for a variable that names no host, or more than one way for this one."""
    for var in env:
        if var.startswith(ENV_PREFIX) and env[var] and host_of(var) is None:
            raise UsageError(
                f"{var} names no registry host: after {ENV_PREFIX}, write the host upper-cased with each '.' "
                "as '_', each '-' as '__' and the ':' before the port as '___'",
                hint=_respelt(var),
            )
    name = env_name(host)
    pair_host = env.get(HOST_VAR, "").strip()
    user, password = env.get(USER_VAR) or None, env.get(PASSWORD_VAR) or None  # (empty: unset, as CI leaves them)
    if (user is not None or password is not None) and not pair_host:
        raise UsageError(
            f"{USER_VAR}/{PASSWORD_VAR} are set, but not {HOST_VAR}: name the one registry host they are for",
            hint=f"export {HOST_VAR}=registry.example.com:5000 (as image references write it)",
        )
    if pair_host and not user:
        raise UsageError(f"{HOST_VAR} is set ({pair_host}), but not {USER_VAR}")
    if pair_host and (pair_host.lower() != pair_host or not _valid_host(pair_host)):
        raise UsageError(f"{HOST_VAR}={pair_host[:80]!r} is not a registry host (lower case, as in image references)")
    scoped = env.get(name) if name else None
    pair_applies = bool(host) and pair_host == host.lower()
    if scoped and pair_applies:
        raise UsageError(f"{host} has credentials in both {name} and {HOST_VAR}/{USER_VAR}: keep one")
    if scoped:
        u, sep, pw = scoped.partition(":")
        if not sep:
            raise UsageError(f"{name} must be 'user:password'")
        return Credentials(u, pw, source=name)
    if pair_applies:
        return Credentials(user or "", password or "", source=f"{USER_VAR} (for {HOST_VAR}={pair_host})")
    return NO_CREDENTIALS


def _valid_host(host: str) -> bool:
    from ..refs import ImageRef, RefError

    try:
        return ImageRef.parse(f"{host}/x").registry == host
    except RefError:
        return False


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


def lookup(host: str, docker_config: str | None = None, environ: Mapping[str, str] | None = None) -> Credentials:
    """The credentials to use for ``host`` (``NO_CREDENTIALS`` when there are none)."""
    env = os.environ if environ is None else environ
    found = _from_environment(host, env)
    if found:
        return found
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
