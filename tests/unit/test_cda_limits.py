"""CDA shape limits, checked while parsing before a tree exists (issue 10, breaks 3 and 7)."""

from __future__ import annotations

import pytest

from gateway.core import cda
from gateway.errors import ParseError
from gateway.settings import PipelineSettings


def nested(depth: int) -> bytes:
    inner = b"<section>" * (depth - 1) + b"</section>" * (depth - 1)
    return b'<ClinicalDocument xmlns="urn:hl7-org:v3">' + inner + b"</ClinicalDocument>"


def code_of(data: bytes, **kw: int) -> str:
    with pytest.raises(ParseError) as info:
        cda.parse_cda(data, **kw)
    return info.value.code


def test_settings_defaults_equal_the_core_defaults() -> None:
    s = PipelineSettings()
    assert (s.max_cda_elements, s.max_cda_depth) == (cda.DEFAULT_MAX_ELEMENTS, cda.DEFAULT_MAX_DEPTH)


def test_deeper_than_the_setting_is_too_deep() -> None:
    assert cda.parse_cda(nested(40), max_depth=40) is not None
    assert code_of(nested(41), max_depth=40) == "CDA_TOO_DEEP"


def test_depth_is_judged_alike_on_the_tree_and_while_counting() -> None:
    # 41 elements, 82 "<": above max_elements=50 the streaming count runs and sees the depth;
    # at the default limit the count is skipped and the tree is measured instead
    assert code_of(nested(41), max_depth=40, max_elements=50) == "CDA_TOO_DEEP"
    assert code_of(nested(41), max_depth=40) == "CDA_TOO_DEEP"
    assert cda.parse_cda(nested(40), max_depth=40, max_elements=50) is not None


@pytest.mark.parametrize("depth", [129, 300])
def test_deeper_than_the_default_is_too_deep(depth: int) -> None:
    assert code_of(nested(depth)) == "CDA_TOO_DEEP"


def test_deeper_than_libxml2_allows_is_too_deep_whatever_the_setting() -> None:
    assert code_of(nested(300), max_depth=10_000) == "CDA_TOO_DEEP"  # libxml2's own 256


def test_too_many_elements() -> None:
    data = b'<ClinicalDocument xmlns="urn:hl7-org:v3">' + b"<a/>" * 1000 + b"</ClinicalDocument>"
    assert code_of(data, max_elements=1000) == "CDA_TOO_MANY_ELEMENTS"
    assert cda.parse_cda(data, max_elements=1001) is not None


def test_syntax_errors_still_say_not_xml() -> None:
    assert code_of(b'<ClinicalDocument xmlns="urn:hl7-org:v3"><a></ClinicalDocument>') == "CDA_NOT_XML"
