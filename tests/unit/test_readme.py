"""The README's two commands stay true: CI runs exactly the README's test command."""

from __future__ import annotations

import re

from tests.support import ROOT


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_ci_runs_the_readme_test_command() -> None:
    serve, tests = _commands()[:2]
    assert "relais serve" in serve
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()


def test_default_toml_documents_every_setting() -> None:
    import dataclasses
    import tomllib

    from gateway.settings import Settings, load_settings

    with open(ROOT / "config" / "default.toml", "rb") as fh:
        documented = tomllib.load(fh)
    defaults = Settings()
    for section in dataclasses.fields(Settings):
        if section.name in ("destinations", "creators", "routes"):  # tables, documented in the README
            continue
        values = dataclasses.asdict(getattr(defaults, section.name))
        assert documented[section.name] == values, section.name
    # and the file loads as a configuration equal to the embedded defaults
    assert load_settings(ROOT / "config" / "default.toml", env={}) == defaults


def test_environment_overrides_a_setting() -> None:
    from gateway.settings import load_settings

    s = load_settings(env={"RELAIS_MLLP_PORT": "2999", "RELAIS_IDENTITY_ALLOW_TEST_INS": "true",
                           "RELAIS_API_TOKENS": "operator:x"})
    assert s.mllp.port == 2999 and s.identity.allow_test_ins is True and s.api.tokens == "operator:x"
