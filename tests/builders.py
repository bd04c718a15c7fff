"""The one way tests build settings and patient identities.

``settings`` goes through ``load_settings`` like ``relais serve`` does (TOML text, then
section overrides), so a test never holds a Settings the gateway could not have read.
``identity`` is our fictitious test patient (test INS OID …4.10), changed only where a
test says so; ``identity_record`` is the same patient as the journal stores it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.journal.rows import IdentityRecord
from gateway.model import Identifier, PatientIdentity
from gateway.settings import Settings, load_settings

__all__ = ["INS", "IPP", "identity", "identity_record", "settings"]

INS = Identifier("279035121518989", oid="1.2.250.1.213.1.4.10", type_code="INS")  # INS-NIR of test patients
IPP = Identifier("000123", oid="1.2.250.1.999999.2.1", type_code="PI")
_TRAITS: dict[str, Any] = {
    "birth_family": "ESSAI-FICTIF",
    "birth_given_list": "MARIE-LOUISE ANNE",
    "first_given": "MARIE-LOUISE",
    "gender": "F",
    "birth_date": "19790315",
    "birthplace_cog": "51215",
    "status": ("VALI",),
}


def settings(tmp_path: Path, *, text: str = "", tokens: str | None = None, **sections: dict[str, Any]) -> Settings:
    """Settings of a test service under ``tmp_path``: ephemeral ports, a fast dispatcher, test INS allowed.

    ``text`` is written as relais.toml and read first; ``sections`` override it section by
    section (``dispatcher={"workers": 4}``); ``tokens`` is RELAIS_API_TOKENS.
    """
    config = None
    if text:
        config = tmp_path / "relais.toml"
        config.write_text(text, encoding="utf-8")
    overrides: dict[str, dict[str, Any]] = {
        "gateway": {"data_dir": str(tmp_path / "data")},
        "mllp": {"port": 0},
        "http": {"port": 0},
        "identity": {"allow_test_ins": True},
        "dispatcher": {"poll_interval": 0.05, "backoff_base": 0.05, "backoff_cap": 0.5},
    }
    for name, values in sections.items():
        overrides.setdefault(name, {}).update(values)
    env = {"RELAIS_API_TOKENS": tokens} if tokens else {}
    return load_settings(config, env=env, overrides=overrides)


def identity(*, identifiers: tuple[Identifier, ...] = (IPP, INS), **traits: Any) -> PatientIdentity:
    """Our test patient as a sender gives it (IPP + test INS, qualified: PID-32 VALI); ``traits`` replace."""
    return PatientIdentity(identifiers=identifiers, **(_TRAITS | traits))


def identity_record(ipp_key: str, *, ins: str | None = None, qualified: bool = False, at: str = "",
                    status: str = "VALI", **traits: Any) -> IdentityRecord:
    """An identity as the journal stores it; unqualified (PROV) unless ``qualified``."""
    return IdentityRecord(ipp_key=ipp_key, ins=ins, ins_oid="1.2.250.1.213.1.4.8" if ins else None,
                          traits=dict(traits) or {"family": "DUPONT"}, status=status if qualified else "PROV",
                          qualified=qualified, updated_at=at)
