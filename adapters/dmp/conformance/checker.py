"""One entry point: judge a request of a given transaction against every rule that applies.

Order (the first layer that fails stops the later ones, as a real endpoint would):
MIME package → SOAP 1.2 / WS-Addressing / WS-Security header → VIHF signature (these are
answered with a SOAP fault) → body element → ebRS schema → metadata, XAdES, ITI-57 and VIHF
attribute rules (answered with a RegistryResponse Failure listing every violation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from lxml import etree

from adapters.dmp.conformance.assertion import Vihf, check_vihf_content, check_vihf_security, read_vihf
from adapters.dmp.conformance.envelope import MTOM_PACKAGE as _MTOM
from adapters.dmp.conformance.envelope import inline_xop, read_envelope
from adapters.dmp.conformance.metadata import RegistryView, check_provide_and_register, check_submission_set
from adapters.dmp.conformance.mime import MimeError, MimePackage, read_body
from adapters.dmp.conformance.names import ACTIONS, DE, NS
from adapters.dmp.conformance.registry_objects import Metadata, read_metadata
from adapters.dmp.conformance.schema import Schemas, load_schemas
from adapters.dmp.conformance.update import StatusChange, check_update
from adapters.dmp.conformance.violation import Rule, Violation
from adapters.dmp.conformance.xades import check_xades, signature_entries

__all__ = ["Verdict", "ConformanceChecker", "TRANSACTIONS"]

TRANSACTIONS = {"ITI-41": ACTIONS.ITI41, "ITI-18": ACTIONS.ITI18, "ITI-57": ACTIONS.ITI57}
_BODIES = {
    "ITI-41": f"{{{NS['xdsb']}}}ProvideAndRegisterDocumentSetRequest",
    "ITI-18": f"{{{NS['query']}}}AdhocQueryRequest",
    "ITI-57": f"{{{NS['lcm']}}}SubmitObjectsRequest",
}
BODY = Rule(
    "ENV-BODY-01",
    "the SOAP body is the transaction's request element",
    "IHE ITI TF-2b §3.41.4.1.2 (xdsb:ProvideAndRegisterDocumentSetRequest), §3.18.4.1.2 "
    "(query:AdhocQueryRequest); Metadata Update suppl. §3.57.4.1.2 (lcm:SubmitObjectsRequest)",
    "XDSRegistryError",
)
_SECRET_CODE = "INVISIBLE_REPRESENTANTS_LEGAUX"


@dataclass
class Verdict:
    """The outcome for one request."""

    transaction: str
    violations: list[Violation] = field(default_factory=list)
    vihf: Vihf | None = None
    xades_valid: bool | None = None
    metadata: Metadata | None = None
    documents: dict[str, bytes] = field(default_factory=dict)
    body: etree._Element | None = None
    message_id: str | None = None
    changes: list[StatusChange] = field(default_factory=list)
    schema_checked: bool = False
    root_part: bytes = b""

    @property
    def fault(self) -> Violation | None:
        """The violation answered with a SOAP fault, if any (it then is the only one)."""
        return next((v for v in self.violations if v.fault), None)

    @property
    def accepted(self) -> bool:
        """True when no violation has error severity."""
        return not any(v.severity == "error" for v in self.violations)


class ConformanceChecker:
    """Strict DMP request checker; see the package docstring for what it shares with nobody."""

    def __init__(
        self,
        *,
        trusted_cert: x509.Certificate | None = None,
        xsd_dir: Path | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.trusted_cert = trusted_cert
        self.schemas: Schemas | None = load_schemas(Path(xsd_dir)) if xsd_dir else None
        self.now = now or (lambda: datetime.now(UTC))

    def check(self, transaction: str, content_type: str, body: bytes, registry: RegistryView) -> Verdict:
        """Judge one request of ``transaction`` (``ITI-41``, ``ITI-18``, ``ITI-57``) against ``registry``."""
        verdict = Verdict(transaction)
        try:
            package = read_body(content_type, body)
        except MimeError as exc:
            verdict.violations.append(_MTOM(str(exc)))
            return verdict
        verdict.root_part = package.root
        envelope = read_envelope(package, TRANSACTIONS[transaction], mtom_required=transaction == "ITI-41")
        verdict.message_id = envelope.message_id
        verdict.violations += envelope.violations
        if verdict.fault or envelope.assertion is None:
            return verdict
        vihf = read_vihf(envelope.assertion)
        verdict.vihf = vihf
        security, _ = check_vihf_security(vihf, trusted=self.trusted_cert, now=self.now())
        verdict.violations += security
        if verdict.fault:
            return verdict
        request = envelope.body
        verdict.body = request
        if request is None or request.tag != _BODIES[transaction]:
            verdict.violations.append(BODY(f"body element is {getattr(request, 'tag', None)}"))
            return verdict
        self._schema(verdict, request, package)
        if transaction == "ITI-18":
            verdict.violations += check_vihf_content(vihf, None, secret_connection=False)
            return verdict
        object_list = request.find(f".//{{{NS['rim']}}}RegistryObjectList")
        metadata = read_metadata(object_list)
        verdict.metadata = metadata
        verdict.violations += check_submission_set(metadata, registry)
        if transaction == "ITI-41":
            documents, problems = inline_xop(request, package)
            verdict.documents = documents
            verdict.violations += problems
            verdict.violations += check_provide_and_register(metadata, documents, registry)
            xades, verdict.xades_valid = check_xades(
                metadata, documents, trusted=self.trusted_cert, now=self.now()
            )
            verdict.violations += xades
            content = [e for e in metadata.entries if e not in signature_entries(metadata)]
            secret = any(
                c.code == _SECRET_CODE for e in content for c in e.codes.get(DE.CONFIDENTIALITY_CODE, [])
            )
        else:
            problems, verdict.changes = check_update(metadata, registry)
            verdict.violations += problems
            secret = False
        verdict.violations += check_vihf_content(vihf, metadata, secret_connection=secret)
        return verdict

    def _schema(self, verdict: Verdict, request: etree._Element, package: MimePackage) -> None:
        if self.schemas is None:
            return
        verdict.schema_checked = True
        verdict.violations += self.schemas.validate(request, package.parts)
