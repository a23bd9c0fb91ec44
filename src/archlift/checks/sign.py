"""Sign every index of a release by digest with cosign, and verify the signatures.

Key-pair signing only (keyless signing needs Fulcio and Rekor on the internet):
``cosign sign --key KEY --tlog-upload=false`` writes the signature to the
registry as the ``sha256-<hex>.sig`` tag next to the image, where
``archlift mirror`` finds and copies it; ``cosign verify --key PUB
--insecure-ignore-tlog=true`` checks it (there is no transparency-log entry
to check). The private key's password comes from ``COSIGN_PASSWORD``; KEY may
be a file or anything cosign accepts (``env://VAR``, ``awskms://...``).

Registry access follows archlift's rules: plain HTTP is allowed for loopback
hosts (and ``insecure``); a CA file adds to the system's trusted roots, never
replaces them: cosign (Go) gets ``SSL_CERT_FILE`` pointing at a temporary bundle
of the roots it would read itself (``$SSL_CERT_FILE``, else the first of Go's
system files that exists) followed by the CA file. Credentials from the
environment (``ARCHLIFT_AUTH_<HOST>``, or ``ARCHLIFT_REGISTRY_HOST`` with
``ARCHLIFT_REGISTRY_USERNAME``/``_PASSWORD``: each names one host) are written,
for their own host only, to a temporary docker config for cosign (it reads
only docker configs); otherwise cosign reads the same docker config archlift does.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ArchliftError, UsageError, VerifyError
from ..lock import ComponentRelease, ReleaseLock
from ..oci import auth, is_loopback
from ..proc import run
from ..refs import ImageRef

if TYPE_CHECKING:
    from ..steps.mirror import Target

SIGNED_BY = "dev.archlift.component"


class SignError(ArchliftError):
    exit_code = 11
    title = "sign"


@dataclass(frozen=True)
class Signature:
    """One index signed (or verified) by digest."""

    component: str
    ref: ImageRef  # repository@index digest
    signature_tag: str  # sha256-<hex>.sig
    verified: bool
    signatures: int = 0  # how many signatures verified against the key

    def to_json(self) -> dict[str, object]:
        return {
            "component": self.component,
            "image": str(self.ref),
            "signature_tag": self.signature_tag,
            "verified": self.verified,
            "signatures": self.signatures,
        }


def signature_tag(ref: ImageRef) -> str:
    assert ref.digest is not None
    return f"{ref.digest.algorithm}-{ref.digest.hex}.sig"


def _is_key_file(key: str) -> bool:
    return "://" not in key


def _check_key(key: str, *, private: bool) -> None:
    if _is_key_file(key) and not Path(key).is_file():
        what = "private key" if private else "public key"
        raise UsageError(
            f"{key}: no such {what} file",
            hint="make a pair with 'COSIGN_PASSWORD=... cosign generate-key-pair'" if private else "",
        )
    if private and "COSIGN_PASSWORD" not in os.environ:
        raise UsageError(
            "COSIGN_PASSWORD is not set: cosign needs the private key's password from the environment",
            hint="export COSIGN_PASSWORD (it may be empty for a key made without a password)",
        )


class Cosign:
    """The cosign command line for a set of registries, with archlift's transport and credential rules."""

    def __init__(self, *, insecure: bool = False, ca_file: str | Path | None = None) -> None:
        self.insecure = insecure
        self.ca_file = str(ca_file) if ca_file else None

    def flags(self, ref: ImageRef) -> list[str]:
        if self.insecure or is_loopback(ref.registry):
            return ["--allow-insecure-registry=true", "--allow-http-registry=true"]
        return []

    @contextlib.contextmanager
    def env(self, hosts: Iterable[str]) -> Iterator[dict[str, str]]:
        out: dict[str, str] = {}
        auths = {}
        for host in sorted(set(hosts)):
            creds = auth.lookup(host)
            if creds and creds.source.startswith("ARCHLIFT_"):
                raw = f"{creds.username}:{creds.password}".encode()
                auths[host] = {"auth": base64.b64encode(raw).decode()}
        if not auths and not self.ca_file:
            yield out
            return
        with tempfile.TemporaryDirectory(prefix="archlift-cosign-") as tmp:
            if self.ca_file:
                bundle = Path(tmp) / "ca-certificates.crt"
                roots = system_roots_file()
                bundle.write_bytes((roots.read_bytes() + b"\n" if roots else b"") + Path(self.ca_file).read_bytes())
                out["SSL_CERT_FILE"] = str(bundle)
            if auths:
                path = Path(tmp) / "config.json"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    json.dump({"auths": auths}, f)
                out["DOCKER_CONFIG"] = tmp
            yield out

    def sign(self, ref: ImageRef, key: str, env: dict[str, str], annotations: dict[str, str]) -> None:
        argv = ["cosign", "sign", "--key", key, "--tlog-upload=false", "--yes", *self.flags(ref)]
        for k, v in sorted(annotations.items()):
            argv += ["-a", f"{k}={v}"]
        run([*argv, str(ref)], env=env, error=SignError, context=f"signing {ref}", timeout=300)

    def verify(self, ref: ImageRef, public_key: str, env: dict[str, str]) -> int:
        """How many signatures of ``ref`` verify against ``public_key``; raises VerifyError when none."""
        argv = ["cosign", "verify", "--key", public_key, "--insecure-ignore-tlog=true", *self.flags(ref), str(ref)]
        result = run(argv, env=env, check=False, timeout=300)
        if result.returncode != 0:
            lines = [ln for ln in (result.stderr or result.stdout).strip().splitlines() if "WARNING" not in ln]
            raise VerifyError(
                f"{ref}: no signature verifies against {public_key}: " + (lines[-1] if lines else "cosign failed"),
                hint="was it signed with the matching private key ('archlift sign'), and were the .sig tags "
                "copied along (archlift mirror copies them)?",
            )
        try:
            payloads = json.loads(result.stdout)
        except ValueError:
            return 1
        digest = str(ref.digest)
        good = [
            p
            for p in payloads
            if isinstance(p, dict) and p.get("critical", {}).get("image", {}).get("docker-manifest-digest") == digest
        ]
        if not good:
            raise VerifyError(f"{ref}: cosign verified signatures, but none names the digest {digest}")
        return len(good)

    def public_key(self, key: str, out: Path, env: dict[str, str]) -> Path:
        run(["cosign", "public-key", "--key", key, "--outfile", str(out)], env=env, error=SignError,
            context=f"deriving the public key of {key}", timeout=60)  # fmt: skip
        return out


# Where Go's crypto/x509 looks for the system's roots on Linux (root_linux.go), in its order.
GO_ROOT_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
)


def system_roots_file() -> Path | None:
    """The file of trusted roots cosign reads when nothing is set: ``$SSL_CERT_FILE``, else the
    first of Go's system files that exists (None when there is none)."""
    env = os.environ.get("SSL_CERT_FILE")
    for name in [env] if env else GO_ROOT_FILES:
        if Path(name).is_file():
            return Path(name)
    return None


def check_public_key(key: str) -> None:
    """A public key file that exists (or a key reference cosign resolves: env://, kms://)."""
    _check_key(key, private=False)


def verify_blob(public_key: str, payload: bytes, signature: str) -> str:
    """Verify a cosign signature (base64) of ``payload`` against ``public_key`` with no registry and
    no transparency log (``cosign verify-blob --offline``): "" when it verifies, else cosign's reason."""
    _check_key(public_key, private=False)
    with tempfile.TemporaryDirectory(prefix="archlift-verify-blob-") as tmp:
        payload_file, sig_file = Path(tmp) / "payload", Path(tmp) / "signature"
        payload_file.write_bytes(payload)
        sig_file.write_text(signature)
        argv = ["cosign", "verify-blob", "--key", public_key, "--signature", str(sig_file)]
        argv += ["--insecure-ignore-tlog=true", "--offline=true", str(payload_file)]
        result = run(argv, check=False, timeout=120)
    if result.returncode == 0:
        return ""
    lines = [ln for ln in (result.stderr or result.stdout).strip().splitlines() if "WARNING" not in ln]
    return lines[-1] if lines else f"cosign verify-blob exited with {result.returncode}"


def _select(lock: ReleaseLock, components: Sequence[str]) -> list[ComponentRelease]:
    for name in components:
        lock.component(name)  # raises ConfigError for an unknown name
    return [c for n, c in sorted(lock.components.items()) if not components or n in components]


def _in(comp: ComponentRelease, registry: str | Target | None) -> ImageRef:
    """The component's index in a mirror of the release (``REGISTRY[/PREFIX]``, placed as
    ``archlift mirror`` places it), or where the release publishes it."""
    if not registry:
        return comp.ref
    from ..steps.mirror import Target

    target = registry if isinstance(registry, Target) else Target.parse(registry, "--registry")
    return target.map(comp.repository).with_digest(comp.index_digest)


def sign_release(
    lock: ReleaseLock,
    key: str,
    *,
    public_key: str | None = None,
    components: Sequence[str] = (),
    cosign: Cosign | None = None,
) -> list[Signature]:
    """Sign each selected component's index by digest, then verify every signature."""
    _check_key(key, private=True)
    if public_key:
        _check_key(public_key, private=False)
    cosign = cosign or Cosign()
    selected = _select(lock, components)
    with cosign.env(c.ref.registry for c in selected) as env, tempfile.TemporaryDirectory() as tmp:
        pub = public_key or str(cosign.public_key(key, Path(tmp) / "cosign.pub", env))
        for comp in selected:
            cosign.sign(comp.ref, key, env, {SIGNED_BY: comp.name})
        return [Signature(c.name, c.ref, signature_tag(c.ref), True, cosign.verify(c.ref, pub, env)) for c in selected]


def verify_release(
    lock: ReleaseLock,
    public_key: str,
    *,
    registry: str | Target | None = None,
    components: Sequence[str] = (),
    cosign: Cosign | None = None,
) -> list[Signature]:
    """Verify every selected index's signature, in the release's registry or a mirror of it
    (``REGISTRY[/PREFIX]``, or a ``Target`` with its layout: at the place of the release's repository)."""
    _check_key(public_key, private=False)
    cosign = cosign or Cosign()
    selected = _select(lock, components)
    refs = [(c.name, _in(c, registry)) for c in selected]
    out = []
    failures = []
    with cosign.env(r.registry for _, r in refs) as env:
        for name, ref in refs:
            try:
                out.append(Signature(name, ref, signature_tag(ref), True, cosign.verify(ref, public_key, env)))
            except VerifyError as e:
                out.append(Signature(name, ref, signature_tag(ref), False))
                failures.append(e.message)
    if failures:
        raise VerifyError(
            f"{len(failures)} of {len(refs)} image(s) have no valid signature:\n  " + "\n  ".join(failures),
            hint="sign the release with 'archlift sign --key cosign.key' and mirror again",
        )
    return out
