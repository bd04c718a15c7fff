"""PID (and MRG) → :class:`gateway.model.PatientIdentity`, following PAM-FR 2.11.

What each field gives (domain brief §1 and §3):

* PID-3 repetitions → identifiers (CX.1 value, CX.4.1 namespace, CX.4.2 OID, CX.5 type);
* PID-5 repetition of type ``L`` → birth name (XPN.1), first birth first name (XPN.2),
  list of birth first names (XPN.3, or XPN.2 when XPN.3 is empty); type ``D`` → used name;
* PID-7 → birth date (first 8 characters), PID-8 → sex;
* PID-11 repetition of type ``BDL`` → birthplace COG code (XAD.9);
* PID-32 repetitions → identity reliability codes (VALI, PROV, FICT …).

Traits are kept exactly as sent (only surrounding blanks are removed): the identity
gate compares them, it must see what the sender wrote. The HL7 null ``""`` reads as
absent; a PID-3 repetition whose CX.1 is ``""`` is not an identifier but an order to
delete one (ADT^A47 INS removal), so it is reported by :func:`null_identifiers`
instead of being turned into an :class:`Identifier`.
"""

from __future__ import annotations

from gateway.core.hl7v2.reader import Field, Message, Repetition, Segment
from gateway.model import Identifier, PatientIdentity

__all__ = ["patient_from_pid", "identifiers_from_cx", "null_identifiers"]


def _clean(value: str) -> str | None:
    """Strip blanks (U+00A0 included: ``str.strip`` knows it) and map empty to None."""
    value = value.strip()
    return value or None


def _identifier(rep: Repetition) -> Identifier | None:
    cx1 = rep.comp(1)
    if not cx1 or not cx1.text.strip():
        return None
    aa = rep.comp(4)
    return Identifier(
        value=cx1.text.strip(),
        oid=_clean(aa.sub(2)),
        namespace=_clean(aa.sub(1)),
        type_code=_clean(rep.comp(5).text),
    )


def identifiers_from_cx(field: Field) -> tuple[Identifier, ...]:
    """Every non-empty CX repetition of ``field`` (PID-3, MRG-1 …) as identifiers."""
    out: list[Identifier] = []
    for rep in field.reps:
        ident = _identifier(rep)
        if ident is not None:
            out.append(ident)
    return tuple(out)


def null_identifiers(field: Field) -> tuple[Identifier, ...]:
    """CX repetitions whose CX.1 is the HL7 null ``""`` (value left empty in the result).

    PAM-FR uses them to say "delete the identifier of this authority", e.g. the
    INS in an ADT^A47 that downgrades a qualified identity.
    """
    out: list[Identifier] = []
    for rep in field.reps:
        if rep.comp(1).is_null:
            aa = rep.comp(4)
            out.append(
                Identifier(
                    value="",
                    oid=_clean(aa.sub(2)),
                    namespace=_clean(aa.sub(1)),
                    type_code=_clean(rep.comp(5).text),
                )
            )
    return tuple(out)


def patient_from_pid(msg: Message | Segment) -> PatientIdentity:
    """Build the patient identity from the first PID of ``msg`` (or from a PID segment).

    A missing PID gives an empty identity; callers report ``PID3_MISSING``.
    """
    pid = msg["PID"] if isinstance(msg, Message) else msg
    birth_family = first_given = birth_given_list = None
    used_family = used_given = None
    for rep in pid[5].reps:
        kind = rep.comp(7).text.strip()
        if kind == "L" and birth_family is None:
            birth_family = _clean(rep.comp(1).sub(1))
            first_given = _clean(rep.comp(2).text)
            birth_given_list = _clean(rep.comp(3).text) or first_given
        elif kind == "D" and used_family is None and used_given is None:
            used_family = _clean(rep.comp(1).sub(1))
            used_given = _clean(rep.comp(2).text)
    birthplace = None
    for rep in pid[11].reps:
        if rep.comp(7).text.strip() == "BDL":
            birthplace = _clean(rep.comp(9).text)
            break
    birth_date = _clean(pid[7].comp(1).text)
    return PatientIdentity(
        identifiers=identifiers_from_cx(pid[3]),
        birth_family=birth_family,
        birth_given_list=birth_given_list,
        first_given=first_given,
        used_family=used_family,
        used_given=used_given,
        gender=_clean(pid[8].comp(1).text),
        birth_date=birth_date[:8] if birth_date else None,
        birthplace_cog=birthplace,
        status=tuple(code for rep in pid[32].reps if (code := rep.comp(1).text.strip())),
    )
