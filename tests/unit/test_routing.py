"""[[route]] tables: the first that matches names the destinations; none matching keeps the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.routing import Route, choose_route, type_matches
from tests import builders

ROUTES = (
    Route("ris", ("dmp",), sender_application="RIS-Y", message_type="ORU"),
    Route("lab-secret", ("archive",), sender_facility="LAB", flags=("DESTDMP", "CONNEXION_SECRETE")),
    Route("posted", ("archive",), http_client="ris-portal"),
)


def pick(**facts: object) -> str | None:
    base: dict[str, object] = {"sender_application": None, "sender_facility": None, "http_client": None,
                               "message_type": None, "flags": {}}
    route = choose_route(ROUTES, **{**base, **facts})  # type: ignore[arg-type]
    return route.name if route else None


def test_first_match_wins_and_every_condition_must_hold() -> None:
    assert pick(sender_application="RIS-Y", message_type="ORU^R01^ORU_R01") == "ris"
    assert pick(sender_application="RIS-Y", message_type="MDM^T02") is None  # type does not match
    assert pick(sender_facility="LAB", flags={"DESTDMP": True, "CONNEXION_SECRETE": True}) == "lab-secret"
    assert pick(sender_facility="LAB", flags={"DESTDMP": True}) is None  # a required flag is missing
    assert pick(http_client="ris-portal", message_type="CDA") == "posted"
    assert pick(sender_application="OTHER") is None  # the default applies


def test_message_type_patterns() -> None:
    assert type_matches("MDM", "MDM^T10^MDM_T02") and not type_matches("MDM", "MDMX^T02")
    assert type_matches("MDM^T02", "MDM^T02^MDM_T02") and not type_matches("MDM^T02", "MDM^T10")
    assert type_matches("ORU^R0*", "ORU^R01^ORU_R01") and not type_matches("ORU^R0*", "MDM^T02")


def _settings(tmp_path: Path, text: str) -> object:
    return builders.settings(tmp_path, text=text)


DESTS = '[[destination]]\nname = "dmp"\nkind = "file"\n[[destination]]\nname = "archive"\nkind = "file"\n'


def test_routes_are_read_in_order_and_checked(tmp_path: Path) -> None:
    s = _settings(tmp_path, DESTS + '[[route]]\nname = "ris"\nsender_application = "RIS-Y"\ndestinations = ["dmp"]\n'
                  '[[route]]\nname = "rest"\ndestinations = []\n')
    assert [(r.name, r.destinations) for r in s.routes] == [("ris", ("dmp",)), ("rest", ())]  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="no destination named 'mhd'"):
        _settings(tmp_path, DESTS + '[[route]]\nname = "x"\ndestinations = ["mhd"]\n')
    with pytest.raises(ValueError, match="unknown key"):
        _settings(tmp_path, DESTS + '[[route]]\nname = "x"\nsender = "RIS"\ndestinations = ["dmp"]\n')
    with pytest.raises(ValueError, match="needs a name"):
        _settings(tmp_path, DESTS + '[[route]]\ndestinations = ["dmp"]\n')
