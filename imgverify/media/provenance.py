"""Content Credentials (C2PA) read with c2pa-python: who signed the file, with what tool, when,
which edits it records, and whether the signature and the content hash still validate.

Absent credentials are the normal case for news photos on social media and say nothing
either way; a credential whose signature or content hash fails is strong evidence the file
was altered after signing.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_MIME = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
         "TIFF": "image/tiff", "GIF": "image/gif", "HEIF": "image/heif", "AVIF": "image/avif"}


@dataclass
class ContentCredentials:
    present: bool
    claim_generator: str | None = None
    signer: str | None = None
    signing_time: str | None = None
    actions: list[str] = field(default_factory=list)
    signature_valid: bool | None = None  # the claim signature verifies
    content_intact: bool | None = None  # the content hash still matches the file
    trusted: bool | None = None  # signer on a configured trust list
    validation_state: str | None = None
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.present:
            return "No Content Credentials (C2PA) in the file; that is normal for most photos."
        if self.error:
            return f"Content Credentials are present but unreadable: {self.error}"
        who = self.signer or "an unknown signer"
        tool = f" with {self.claim_generator}" if self.claim_generator else ""
        when = f" at {self.signing_time}" if self.signing_time else ""
        acts = f"; recorded edits: {', '.join(self.actions)}" if self.actions else ""
        if self.signature_valid and self.content_intact:
            status = "the signature and content hash validate"
            if self.trusted is False:
                status += " (the signer is not on a trust list imgverify knows)"
        elif self.signature_valid is False:
            status = "the SIGNATURE DOES NOT VALIDATE"
        else:
            status = "the file was CHANGED AFTER SIGNING (content hash mismatch)"
        return f"Content Credentials signed by {who}{tool}{when}: {status}{acts}."


def _codes(results: dict[str, Any], kind: str) -> list[str]:
    out: list[str] = []
    for section in ("activeManifest",):
        block = results.get(section) or {}
        out += [str(x.get("code")) for x in block.get(kind, []) if isinstance(x, dict)]
    for block in results.get("ingredientDeltas") or []:
        out += [str(x.get("code")) for x in (block.get("validationDeltas") or {}).get(kind, [])
                if isinstance(x, dict)]
    return out


def read_credentials(data: bytes, image_format: str) -> ContentCredentials | None:
    """Content Credentials of the file, or None when c2pa-python is not installed."""
    try:
        import c2pa
    except Exception:  # noqa: BLE001 - optional capability
        return None
    mime = _MIME.get(image_format.upper())
    if mime is None:
        return ContentCredentials(present=False)
    try:
        reader = c2pa.Reader(mime, io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - c2pa raises its own error family
        name = type(exc).__name__
        if "NotFound" in name or "no JUMBF" in str(exc):
            return ContentCredentials(present=False)
        return ContentCredentials(present=True, signature_valid=False, content_intact=None,
                                  error=f"{name}: {str(exc)[:200]}",
                                  problems=["manifest.unreadable"])
    try:
        manifest_store = json.loads(reader.json())
        active = manifest_store.get("manifests", {}).get(
            manifest_store.get("active_manifest", ""), {})
        gen = active.get("claim_generator_info") or []
        generator = ", ".join(
            f"{g.get('name')} {g.get('version', '')}".strip() for g in gen if isinstance(g, dict)
        ) or active.get("claim_generator")
        sig = active.get("signature_info") or {}
        signer = sig.get("common_name") or sig.get("issuer")
        if sig.get("issuer") and sig.get("common_name") and sig["issuer"] != sig["common_name"]:
            signer = f"{sig['common_name']} ({sig['issuer']})"
        actions: list[str] = []
        for a in active.get("assertions") or []:
            if str(a.get("label", "")).startswith("c2pa.actions"):
                for act in (a.get("data") or {}).get("actions") or []:
                    actions.append(str(act.get("action", "")).replace("c2pa.", ""))
        results = reader.get_validation_results() or {}
        failures = _codes(results, "failure")
        successes = _codes(results, "success")
        state = str(reader.get_validation_state())
    except Exception as exc:  # noqa: BLE001
        return ContentCredentials(present=True, error=f"{type(exc).__name__}: {exc}"[:200])
    finally:
        try:
            reader.close()
        except Exception:  # noqa: BLE001
            pass
    signature_valid = not any(c.startswith("claimSignature") for c in failures) and any(
        c.startswith("claimSignature.validated") for c in successes)
    content_intact = not any("dataHash" in c or "boxesHash" in c or "hashedURI.mismatch" in c
                             for c in failures)
    untrusted = any(c == "signingCredential.untrusted" for c in failures + successes)
    return ContentCredentials(
        present=True, claim_generator=generator, signer=signer,
        signing_time=sig.get("time"), actions=actions, signature_valid=signature_valid,
        content_intact=content_intact, trusted=not untrusted, validation_state=state,
        problems=[c for c in failures if c != "signingCredential.untrusted"])
