"""Trait normalisation (comparison only) and strict-trait differences."""

from __future__ import annotations

import pytest

from gateway.core.identity.traits import normalise_trait, strict_traits_differ
from gateway.model import PatientIdentity


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Dupré", "DUPRE"),
        ("Hélène  Marie-Cécile", "HELENE MARIE-CECILE"),
        ("  françois ", "FRANCOIS"),
        ("Œillet", "OEILLET"),
        ("cœur", "COEUR"),
        ("Lætitia", "LAETITIA"),
        ("Æsa", "AESA"),
        ("Strauß", "STRAUSS"),
        ("D'Arc", "D'ARC"),  # apostrophe kept
        ("PAT-TROIS", "PAT-TROIS"),  # hyphen kept
        ("Jeanne\tMarie\nCécile", "JEANNE MARIE CECILE"),
        ("Çağlar Ñúñez", "CAGLAR NUNEZ"),
        (None, ""),
        ("", ""),
    ],
)
def test_normalise_trait(raw: str | None, expected: str) -> None:
    assert normalise_trait(raw) == expected


def test_normalise_is_idempotent_and_leaves_insi_traits_alone() -> None:
    insi = "JEANNE MARIE CECILE"
    assert normalise_trait(insi) == insi
    assert normalise_trait(normalise_trait("Cécile-Œ")) == normalise_trait("Cécile-Œ")


BASE = PatientIdentity(
    birth_family="DARK",
    birth_given_list="JEANNE MARIE CECILE",
    first_given="JEANNE",
    gender="F",
    birth_date="19600530",
    birthplace_cog="88154",
)


def test_same_identity_with_accents_does_not_differ() -> None:
    other = PatientIdentity(
        birth_family="Dark",
        birth_given_list="Jeanne  Marie Cécile",
        first_given="jeanne",
        gender="f",
        birth_date="1960-05-30",
        birthplace_cog="88154",
    )
    assert strict_traits_differ(BASE, other) == []


def test_differences_are_listed_in_trait_order() -> None:
    other = PatientIdentity(
        birth_family="DARC",
        birth_given_list="JEANNE MARIE",
        first_given="JEANNE",
        gender="M",
        birth_date="1960-05-31",
        birthplace_cog="2A004",
    )
    assert strict_traits_differ(BASE, other) == [
        "birth_family",
        "birth_given_list",
        "gender",
        "birth_date",
        "birthplace_cog",
    ]


def test_missing_traits_are_not_differences() -> None:
    assert strict_traits_differ(BASE, PatientIdentity()) == []
    assert strict_traits_differ(PatientIdentity(first_given="JEAN"), BASE) == ["first_given"]
    assert strict_traits_differ(BASE, PatientIdentity(gender="U")) == []  # unknown sex
    assert strict_traits_differ(BASE, PatientIdentity(birth_family="  ")) == []


@pytest.mark.parametrize(
    ("other", "differs"),
    [
        ("1960", False),
        ("196005", False),
        ("1960-05", False),
        ("19600530000000", False),  # CDA TS with a time
        ("1961", True),
        ("1960-06", True),
    ],
)
def test_birth_dates_compare_on_common_prefix(other: str, differs: bool) -> None:
    result = strict_traits_differ(BASE, PatientIdentity(birth_date=other))
    assert result == (["birth_date"] if differs else [])


def test_hyphen_is_significant() -> None:
    a = PatientIdentity(first_given="MARIE-LOUISE")
    b = PatientIdentity(first_given="MARIE LOUISE")
    assert strict_traits_differ(a, b) == ["first_given"]
