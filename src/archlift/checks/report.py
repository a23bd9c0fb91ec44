"""The release report: one markdown page from the release lock and what the later steps wrote.

Reads ``dist/release.json`` (what was released, by digest), and when they
exist ``dist/signatures.json`` (written by ``archlift sign``) and
``dist/manifests-artifact.json`` (written by ``archlift publish``). Writes
``dist/release-report.md`` and appends it to ``$GITHUB_STEP_SUMMARY`` when
that is set. Pure: the same files give the same page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..lock import ComponentRelease, ReleaseLock, write_atomic

DEFAULT_REPORT = Path("dist/release-report.md")
DEFAULT_SIGNATURES = Path("dist/signatures.json")
DEFAULT_ARTIFACT = Path("dist/manifests-artifact.json")


@dataclass(frozen=True)
class ReportInputs:
    lock: ReleaseLock
    lock_path: Path
    signatures: dict[str, dict[str, Any]]  # component -> Signature.to_json()
    artifact: dict[str, Any] | None  # publish's manifests-artifact.json
    signatures_path: Path | None = None
    artifact_path: Path | None = None


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: {what} is not valid JSON: {e.msg}") from None


def load_inputs(
    lock_path: Path, signatures_path: Path | None = DEFAULT_SIGNATURES, artifact_path: Path | None = DEFAULT_ARTIFACT
) -> ReportInputs:
    """The lock (required), and the signatures and manifests-artifact records when the files exist."""
    lock = ReleaseLock.read(lock_path)
    signatures: dict[str, dict[str, Any]] = {}
    sig_used = None
    if signatures_path and signatures_path.is_file():
        data = _read_json(signatures_path, "the signatures record")
        items = data.get("signatures", []) if isinstance(data, dict) else []
        signatures = {str(s["component"]): s for s in items if isinstance(s, dict) and "component" in s}
        sig_used = signatures_path
    artifact = None
    art_used = None
    if artifact_path and artifact_path.is_file():
        artifact = _read_json(artifact_path, "the manifests artifact record")
        art_used = artifact_path
    return ReportInputs(lock, lock_path, signatures, artifact, sig_used, art_used)


def _code(text: str) -> str:
    return f"`{text}`" if text else "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _signature(inputs: ReportInputs, comp: ComponentRelease, *, short: bool = False) -> str:
    sig = inputs.signatures.get(comp.name)
    if not sig:
        return "not signed" if inputs.signatures_path else "-"
    if sig.get("image") and not str(sig["image"]).endswith(str(comp.index_digest)):
        return "signed for another digest (stale)"
    if sig.get("verified"):
        if short:
            return "verified"
        return f"cosign, verified ({_code(str(sig.get('signature_tag', '')))})"
    return "signature did NOT verify"


def _upstream(comp: ComponentRelease) -> str:
    if comp.upstream:
        up = comp.upstream
        return f"{_code(up.version)} at {_code(up.commit[:12])}"
    if comp.source_image:
        return f"mirror of {_code(comp.source_image)}"
    return "-"


def render(inputs: ReportInputs) -> str:
    lock = inputs.lock
    comps = [lock.components[n] for n in sorted(lock.components)]
    signed = sum(1 for c in comps if inputs.signatures.get(c.name, {}).get("verified"))
    lines = [
        "# Release report",
        "",
        f"- release lock: {_code(str(inputs.lock_path))} (from {_code(lock.config)}, created {lock.created_at or '-'})",
        f"- images: {len(comps)} ({sum(1 for c in comps if c.kind == 'built')} built, "
        f"{sum(1 for c in comps if c.kind != 'built')} mirrored)",
    ]
    if inputs.signatures_path:
        lines.append(f"- signatures: {signed} of {len(comps)} verified (cosign, key pair; {inputs.signatures_path})")
    else:
        lines.append("- signatures: none recorded (run 'archlift sign')")
    if lock.partial_platform:
        lines.append(f"- PARTIAL lock: only {lock.partial_platform} (merge the partial locks first)")
    lines += [
        "",
        "| component | kind | platforms | upstream | patches | signature |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c in comps:
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    c.name,
                    c.kind,
                    ", ".join(sorted(c.platforms)),
                    _upstream(c),
                    str(len(c.patches)),
                    _signature(inputs, c, short=True),
                )
            )
            + " |"
        )
    for c in comps:
        lines += ["", f"## {c.name}", "", f"- image: {_code(str(c.ref))}"]
        lines.append(f"- tags: {', '.join(_code(t) for t in c.tags) or '-'}")
        if c.upstream:
            up = c.upstream
            lines.append(f"- upstream: {up.url} ref {_code(up.ref)}, version {_code(up.version)}")
            lines.append(f"- commit: {_code(up.commit)}")
        if c.source_image:
            lines.append(f"- mirrored from: {_code(c.source_image)}")
        if c.patches:
            lines.append("- patches:")
            lines += [f"  - {_code(p.file)} (sha256 {p.sha256[:12]})" for p in c.patches]
        elif c.kind == "built":
            lines.append("- patches: none")
        if c.inputs_hash:
            lines.append(
                f"- inputs hash: {_code(c.inputs_hash[:12])}" + (f", built {c.built_at}" if c.built_at else "")
            )
        lines.append(f"- signature: {_signature(inputs, c)}")
        lines += ["", "| platform | manifest digest | attestation manifest |", "| --- | --- | --- |"]
        for platform, digest in sorted(c.platforms.items()):
            att = c.attestations.get(str(digest))
            lines.append(f"| {platform} | {_code(str(digest))} | {_code(str(att)) if att else '-'} |")
    lines += ["", "## Manifests artifact", ""]
    art = inputs.artifact
    if not art:
        lines.append("none published (run 'archlift publish')")
    else:
        lines.append(f"- repository: {_code(str(art.get('repository', '')))}; {len(art.get('files', []))} file(s)")
        lines += ["", "| form | reference | layer |", "| --- | --- | --- |"]
        for form, a in sorted((art.get("artifacts") or {}).items()):
            layer = a.get("layer") or {}
            lines.append(
                f"| {_cell(form)} | {_code(str(a.get('ref', '')))} | "
                f"{_code(str(layer.get('mediaType', '')))} {_code(str(layer.get('digest', '')))} |"
            )
    return "\n".join(lines) + "\n"


def write(inputs: ReportInputs, out: Path = DEFAULT_REPORT) -> str:
    """Write the report to ``out`` and append it to ``$GITHUB_STEP_SUMMARY`` when set; returns it."""
    from ..ui import step_summary

    text = render(inputs)
    write_atomic(out, text)
    step_summary(text)
    return text
