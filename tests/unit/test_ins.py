"""INS matricule rules: the vectors of docs/domain.md §8 plus property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.identity.ins import (
    OID_INS_NIA,
    OID_INS_NIR,
    OID_INS_NIR_DEMO,
    OID_INS_NIR_TEST,
    InsCode,
    InsVerdict,
    compute_key,
    validate_ins,
)

# --- domain.md §8 -----------------------------------------------------------------

VALID = [
    ("279035121518989", "ANS test patient PAT-TROIS"),
    ("185057800608491", "M, 1985-05, dept 78"),
    ("253072A07300443", "Corsica 2A"),
    ("253072B07300470", "Corsica 2B"),
    ("150032000401277", "Corsica before 1976 (20)"),
    ("295109912611193", "born in Greece 99126"),
    ("188079935012311", "NIA layout, born in Morocco"),
    ("175209910900457", "month 20 (unknown)"),
    ("292069711203349", "overseas 971"),
]

INVALID = [
    ("276037510669380", [InsCode.INS_KEY]),  # APN example: do not copy spec examples
    ("123456789012244", [InsCode.INS_KEY]),  # FR Core example
    ("27903512151898", [InsCode.INS_LENGTH]),
    ("2790351215189890", [InsCode.INS_LENGTH]),
    ("", [InsCode.INS_LENGTH]),
    ("253072C07300443", [InsCode.INS_FORMAT]),
    ("2790351215I8989", [InsCode.INS_FORMAT]),
    ("253072a07300443", [InsCode.INS_FORMAT]),  # lower case is not 2A
    ("2A3072107300443", [InsCode.INS_FORMAT]),  # 2A outside positions 6-7
    ("185137800608425", [InsCode.INS_MONTH]),  # month 13, key consistent
    ("585057800608485", [InsCode.INS_SEX_DIGIT]),  # sex digit 5, key consistent
]


def with_key(base13: str) -> str:
    return base13 + compute_key(base13)


@pytest.mark.parametrize(("number", "why"), VALID)
def test_valid_vectors(number: str, why: str) -> None:
    verdict = validate_ins(number)
    assert verdict.valid, why
    assert verdict.error_codes == ()
    assert verdict.warning_codes == ()
    assert verdict.kind is None  # no OID: only the number is checked


@pytest.mark.parametrize(("number", "codes"), INVALID)
def test_invalid_vectors(number: str, codes: list[InsCode]) -> None:
    verdict = validate_ins(number)
    assert not verdict.valid
    assert verdict.error_codes == tuple(codes)


@pytest.mark.parametrize(
    ("base13", "key"),
    [
        ("2790351215189", "89"),
        ("1850578006084", "91"),
        ("253072A073004", "43"),
        ("253072B073004", "70"),
        ("1500320004012", "77"),
        ("2951099126111", "93"),
        ("1880799350123", "11"),
        ("1752099109004", "57"),
        ("2760375106693", "26"),
        ("1234567890122", "12"),
        ("1851378006084", "25"),
        ("5850578006084", "85"),
        ("2920697112033", "49"),
    ],
)
def test_compute_key(base13: str, key: str) -> None:
    assert compute_key(base13) == key


def test_compute_key_corsica_equals_numeric_alias() -> None:
    # 2A is read as 19 and 2B as 18, so each shares its key with the numeric alias.
    assert compute_key("253072A073004") == compute_key("2530719073004")
    assert compute_key("253072B073004") == compute_key("2530718073004")


@pytest.mark.parametrize("bad", ["123", "253072C073004", "25307 2073004", "2790351215189x"])
def test_compute_key_rejects_non_base(bad: str) -> None:
    with pytest.raises(ValueError):
        compute_key(bad)


def test_key_never_00() -> None:
    # N divisible by 97 has key 97, never 00.
    base = f"{97 * 12345678901:013d}"
    assert int(base) % 97 == 0
    assert compute_key(base) == "97"
    assert validate_ins(base + "00").error_codes[:1] == (InsCode.INS_KEY,)


def test_sex_mismatch() -> None:
    verdict = validate_ins("185057800608491", sex="F")
    assert verdict.error_codes == (InsCode.INS_SEX_MISMATCH,)
    assert validate_ins("185057800608491", sex="M").valid
    assert validate_ins("185057800608491", sex="U").valid  # unknown: no check
    assert validate_ins("279035121518989", sex="F").valid


def test_birth_date_matches() -> None:
    assert validate_ins("279035121518989", sex="F", birth_date="1979-03-12").valid
    assert validate_ins("279035121518989", birth_date="19790312").valid
    assert validate_ins("279035121518989", birth_date="1979").valid  # partial
    assert validate_ins("279035121518989", birth_date="197903").valid


def test_birth_year_and_month_mismatch() -> None:
    assert validate_ins("279035121518989", birth_date="1980-03-12").error_codes == (
        InsCode.INS_BIRTH_YEAR_MISMATCH,
    )
    assert validate_ins("279035121518989", birth_date="19790412").error_codes == (
        InsCode.INS_BIRTH_MONTH_MISMATCH,
    )
    assert validate_ins("279035121518989", birth_date="1880-04").error_codes == (
        InsCode.INS_BIRTH_YEAR_MISMATCH,
        InsCode.INS_BIRTH_MONTH_MISMATCH,
    )


def test_unknown_month_skips_month_comparison() -> None:
    assert validate_ins("175209910900457", birth_date="1975-06-01").valid
    assert validate_ins("175209910900457", birth_date="1976-06-01").error_codes == (
        InsCode.INS_BIRTH_YEAR_MISMATCH,
    )


@pytest.mark.parametrize("month", ["00", "13", "14", "19"])
def test_invalid_months(month: str) -> None:
    verdict = validate_ins(with_key(f"185{month}78006084"))
    assert verdict.error_codes == (InsCode.INS_MONTH,)


@pytest.mark.parametrize("month", ["01", "12", "20", "42", "50", "99"])
def test_accepted_months(month: str) -> None:
    assert validate_ins(with_key(f"185{month}78006084")).valid


@pytest.mark.parametrize("digit", ["3", "4", "7", "8"])
def test_tolerated_sex_digit_warns_when_key_ok(digit: str) -> None:
    verdict = validate_ins(with_key(f"{digit}850578006084"))
    assert verdict.valid
    assert verdict.warning_codes == (InsCode.INS_SEX_DIGIT,)
    assert verdict.warnings[0].severity == "warning"


def test_tolerated_sex_digit_is_an_error_when_key_bad() -> None:
    number = with_key("3850578006084")
    bad = number[:13] + f"{(int(number[13:]) % 97) + 1:02d}"
    verdict = validate_ins(bad)
    assert verdict.error_codes == (InsCode.INS_KEY, InsCode.INS_SEX_DIGIT)
    assert verdict.warning_codes == ()


def test_tolerated_sex_digit_parity_against_sex() -> None:
    # 3/7 read as male and 4/8 as female, like 1/2.
    assert validate_ins(with_key("7850578006084"), sex="M").valid
    assert validate_ins(with_key("8850578006084"), sex="M").error_codes == (InsCode.INS_SEX_MISMATCH,)


@pytest.mark.parametrize("digit", ["0", "5", "6", "9"])
def test_invalid_sex_digits(digit: str) -> None:
    verdict = validate_ins(with_key(f"{digit}850578006084"))
    assert verdict.error_codes == (InsCode.INS_SEX_DIGIT,)


# --- OIDs and type codes -------------------------------------------------------------


def test_oid_kinds() -> None:
    assert validate_ins("185057800608491", oid=OID_INS_NIR).kind == "INS-NIR"
    nia = validate_ins("188079935012311", oid=OID_INS_NIA)
    assert nia.valid and nia.kind == "INS-NIA"
    assert validate_ins("185057800608491", oid="urn:oid:1.2.250.1.213.1.4.8").kind == "INS-NIR"


@pytest.mark.parametrize(
    ("oid", "kind"), [(OID_INS_NIR_TEST, "INS-NIR-TEST"), (OID_INS_NIR_DEMO, "INS-NIR-DEMO")]
)
def test_test_oids_refused_unless_allowed(oid: str, kind: str) -> None:
    refused = validate_ins("279035121518989", oid=oid)
    assert not refused.valid
    assert refused.kind == kind
    assert refused.error_codes == (InsCode.INS_OID_TEST,)
    allowed = validate_ins("279035121518989", oid=oid, allow_test=True)
    assert allowed.valid and allowed.kind == kind


@pytest.mark.parametrize(
    "oid",
    [
        "1.2.250.1.213.1.4.5",  # used as "the INS OID" by third parties: wrong
        "urn:oid:1.2.250.1.213.1.4.5",
        "1.2.250.1.213.1.4.2",  # INS-C
        "1.2.250.1.213.1.4.6",
        "1.2.250.1.213.1.4.7",
        "1.2.250.1.71.4.2.1",
        "",
    ],
)
def test_unknown_oids_rejected(oid: str) -> None:
    verdict = validate_ins("185057800608491", oid=oid)
    assert not verdict.valid
    assert verdict.kind is None
    assert verdict.error_codes == (InsCode.INS_OID_UNKNOWN,)


def test_billing_nir_rejected() -> None:
    verdict = validate_ins("185057800608491", oid=OID_INS_NIR, type_code="NH")
    assert not verdict.valid
    assert verdict.kind is None
    assert verdict.error_codes == (InsCode.INS_OID_UNKNOWN,)
    assert "NH" in verdict.errors[0].message and "billing NIR" in verdict.errors[0].message
    assert validate_ins("185057800608491", oid=OID_INS_NIR, type_code="INS").valid


def test_oid_checked_even_when_number_is_bad() -> None:
    verdict = validate_ins("27903512151898", oid="1.2.250.1.213.1.4.5")
    assert verdict.error_codes == (InsCode.INS_LENGTH, InsCode.INS_OID_UNKNOWN)


# --- verdict shape -------------------------------------------------------------------


def test_verdict_shape() -> None:
    verdict = validate_ins("276037510669380", oid=OID_INS_NIR)
    assert isinstance(verdict, InsVerdict)
    assert verdict.as_dict() == {"valid": False, "kind": "INS-NIR", "errors": ["INS_KEY"], "warnings": []}
    finding = verdict.errors[0]
    assert finding.location is None
    assert finding.message
    assert type(finding.code) is str
    with pytest.raises(AttributeError):
        verdict.valid = True  # type: ignore[misc]


def test_messages_do_not_repeat_the_number() -> None:
    number = "185057800608491"
    verdict = validate_ins(number, oid="1.2.250.1.213.1.4.5", sex="F", birth_date="1990-01-01")
    assert verdict.error_codes == (
        InsCode.INS_BIRTH_YEAR_MISMATCH,
        InsCode.INS_BIRTH_MONTH_MISMATCH,
        InsCode.INS_SEX_MISMATCH,
        InsCode.INS_OID_UNKNOWN,
    )
    assert all(number not in f.message and "1990" not in f.message for f in verdict.errors)


def test_code_list_is_stable() -> None:
    assert [c.value for c in InsCode] == [
        "INS_LENGTH",
        "INS_FORMAT",
        "INS_KEY",
        "INS_SEX_DIGIT",
        "INS_MONTH",
        "INS_SEX_MISMATCH",
        "INS_BIRTH_YEAR_MISMATCH",
        "INS_BIRTH_MONTH_MISMATCH",
        "INS_OID_UNKNOWN",
        "INS_OID_TEST",
        "INS_NOT_QUALIFIED",
        "INS_TRAITS_MISMATCH",
        "INS_CONFLICT",
    ]


# --- properties ----------------------------------------------------------------------

_digits = st.text(alphabet="0123456789", min_size=1, max_size=1)


@st.composite
def valid_bases(draw: st.DrawFn) -> str:
    """A plausible 13-character base: sex 1/2, any year, month 01-12, optional 2A/2B."""
    sex = draw(st.sampled_from("12"))
    year = f"{draw(st.integers(0, 99)):02d}"
    month = f"{draw(st.integers(1, 12)):02d}"
    dept = draw(st.one_of(st.sampled_from(["2A", "2B"]), st.integers(0, 99).map(lambda d: f"{d:02d}")))
    rest = f"{draw(st.integers(0, 999_999)):06d}"
    return sex + year + month + dept + rest


@given(valid_bases())
def test_property_valid_base_with_its_key_passes(base: str) -> None:
    verdict = validate_ins(base + compute_key(base))
    assert verdict.valid, verdict.error_codes
    assert verdict.warning_codes == ()


# Why a single change always breaks the key here. Read as an integer, the 15
# characters satisfy N + key ≡ 0 (mod 97) with the key in 01-97. Replacing one digit
# shifts N (or the key) by d·10^k with 0 < |d| ≤ 9, and swapping adjacent different
# digits by 9·(a − b)·10^k; 97 is prime and divides neither, so the key no longer
# matches (across the base/key boundary the sum shifts by 9·(a − b), same argument).
# 2A/2B break the "one character = one digit" reading: "2A" counts as "19", so
# "2A" → "19" keeps the key, but that is two substitutions and out of scope. What a
# single change can do to a Corsica pair is either leave the alphabet (e.g. "2A" →
# "1A", or a transposition that moves the letter: INS_FORMAT) or turn "2A" into
# "2d", i.e. 19 → 20+d, a shift of 1..10 units of 10^8: INS_KEY again. Hence the
# generated changes are restricted to a *digit* replacing a different character,
# and transpositions of two *different* characters (a swap of equal characters is no
# change at all).


@given(valid_bases(), st.integers(0, 14), _digits)
def test_property_single_substitution_fails(base: str, pos: int, digit: str) -> None:
    number = base + compute_key(base)
    if number[pos] == digit:
        digit = str((int(digit) + 1) % 10) if number[pos].isdigit() else digit
    mutated = number[:pos] + digit + number[pos + 1 :]
    assert mutated != number
    verdict = validate_ins(mutated)
    assert not verdict.valid
    assert {InsCode.INS_KEY, InsCode.INS_FORMAT} & set(verdict.error_codes)


@given(valid_bases(), st.integers(0, 13))
def test_property_adjacent_transposition_fails(base: str, pos: int) -> None:
    number = base + compute_key(base)
    a, b = number[pos], number[pos + 1]
    if a == b:
        return  # swapping equal characters changes nothing
    mutated = number[:pos] + b + a + number[pos + 2 :]
    verdict = validate_ins(mutated)
    assert not verdict.valid
    assert {InsCode.INS_KEY, InsCode.INS_FORMAT} & set(verdict.error_codes)


def test_exhaustive_single_changes_of_corsica_vectors() -> None:
    # Deterministic complement to the properties for the two Corsica letters.
    for number in ("253072A07300443", "253072B07300470"):
        for pos in range(15):
            for digit in "0123456789":
                if number[pos] != digit:
                    mutated = number[:pos] + digit + number[pos + 1 :]
                    assert not validate_ins(mutated).valid, mutated
            if pos < 14 and number[pos] != number[pos + 1]:
                swapped = number[:pos] + number[pos + 1] + number[pos] + number[pos + 2 :]
                assert {InsCode.INS_KEY, InsCode.INS_FORMAT} & set(validate_ins(swapped).error_codes)
