"""A ``kind = "dmp-xds"`` destination table turned into :class:`DmpSettings`, checked once at start.

What the DMP reads about us must be real before we talk to the national service: the
PFI's XDS sourceId, the LPS homologation number, a signed submission set. Placeholders are
tolerated only against a test URL (loopback) or a destination declared
``test_platform = true``; anywhere else start-up is refused (``StartupRefused``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from adapters.base import RetrySettings
from adapters.dmp.client import DmpDestination, DmpSettings
from adapters.dmp.pki import ensure_signing_material
from adapters.dmp.vihf import VihfSettings, check_vihf_settings, parse_roles
from gateway.errors import StartupRefused
from gateway.ports import Clock
from gateway.settings import DestinationSettings, Settings, is_loopback

__all__ = ["PLACEHOLDER_HOMOLOGATION", "PLACEHOLDER_SOURCE_ID", "check_dmp_identity", "destination_from_settings",
           "dmp_settings"]

log = structlog.get_logger(__name__)

#: Values shipped as defaults that identify no real PFI: the XDS sourceId under the
#: 1.2.250.1.999999 test arc and an LPS without DMP homologation number.
PLACEHOLDER_SOURCE_ID = "1.2.250.1.999999.1"
PLACEHOLDER_HOMOLOGATION = "NON-HOMOLOGUE"


def _is_test_url(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")


def check_dmp_identity(name: str, urls: list[str], *, source_id: str, homologation: str,
                       signed: bool, test_platform: bool) -> list[str]:
    """Placeholders in what the DMP reads about us: the warnings; raises ``StartupRefused``.

    A "test URL" is a loopback / localhost one, or any URL of a destination declared
    ``test_platform = true`` (the ANS DMP test platforms are not on loopback). Against
    anything else, placeholders would be sent to the national DMP: refuse to start.
    """
    problems = []
    if source_id == PLACEHOLDER_SOURCE_ID or source_id.startswith("1.2.250.1.999999."):
        problems.append(f"gateway.source_id is the placeholder {source_id} (set the OID of this PFI)")
    if not homologation or homologation == PLACEHOLDER_HOMOLOGATION:
        problems.append("vihf_lps_homologation (LPS_ID_HOMOLOGATION_DMP) is the placeholder "
                        f"{homologation or '(empty)'} (set the DMP homologation number)")
    if not signed:
        problems.append("xades = false: submission sets are not signed, which the DMP refuses")
    if problems and not (test_platform or all(_is_test_url(u) for u in urls if u)):
        raise StartupRefused(f"destination {name}: refusing to start against {urls[0]}: " + "; ".join(problems)
                             + " (or declare test_platform = true for a DMP test platform)")
    return problems


def _vihf(d: DestinationSettings, opts: Mapping[str, Any], data_dir: Path) -> VihfSettings:
    key, cert = opts.get("vihf_key"), opts.get("vihf_cert")
    if not key or not cert:
        key, cert = ensure_signing_material(data_dir / "pki")
        log.warning("dmp.self_signed_vihf", destination=d.name,
                    hint="set vihf_key and vihf_cert to the structure's cachet certificate")
    fields = {k[len("vihf_"):]: v for k, v in opts.items() if k.startswith("vihf_") and k not in ("vihf_key", "vihf_cert")}
    # The J65 subject roles cannot come from the message (volet mapping table): one list
    # per sending application (MSH-3), ``vihf_roles = { "RIS-Y" = ["10^1.2.250.1.71.1.2.7", …] }``.
    raw_roles = dict(fields.pop("roles", {}) or {})
    raw_default = fields.pop("default_roles", None)
    structure_id = fields.pop("structure_id", opts.get("structure_id"))
    try:
        vihf = VihfSettings(
            key_path=Path(key), cert_path=Path(cert),
            structure_id=str(structure_id) if structure_id else None,
            roles={str(app): parse_roles(values, f"destination {d.name}: vihf_roles.{app}")
                   for app, values in raw_roles.items()},
            default_roles=parse_roles(raw_default, f"destination {d.name}: vihf_default_roles") if raw_default else (),
            **fields,
        )
        check_vihf_settings(vihf)
    except (ValueError, TypeError) as exc:
        raise StartupRefused(f"destination {d.name}: {exc}") from exc
    return vihf


def _path(opts: Mapping[str, Any], key: str) -> Path | None:
    return Path(opts[key]) if opts.get(key) else None


def dmp_settings(d: DestinationSettings, settings: Settings) -> DmpSettings:
    """The typed settings of one DMP destination; ``StartupRefused`` when they must not be used."""
    opts = d.options
    vihf = _vihf(d, opts, settings.data_dir)
    signed = bool(opts.get("xades", True))
    for problem in check_dmp_identity(
        d.name, [d.url, str(opts.get("registry_url") or "")], source_id=settings.gateway.source_id,
        homologation=vihf.lps_homologation, signed=signed, test_platform=bool(opts.get("test_platform")),
    ):
        log.warning("dmp.placeholder_identity", destination=d.name, problem=problem)
    return DmpSettings(
        url=d.url, vihf=vihf, registry_url=opts.get("registry_url"), source_id=settings.gateway.source_id,
        tls_cert=_path(opts, "tls_cert"), tls_key=_path(opts, "tls_key"), tls_ca=_path(opts, "tls_ca"),
        retry=RetrySettings.from_settings(settings), sign_submission_set=signed,
    )


def destination_from_settings(d: DestinationSettings, settings: Settings, clock: Clock) -> DmpDestination:
    return DmpDestination(d.name, dmp_settings(d, settings), clock=clock)
