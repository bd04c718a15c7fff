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


def _built_tree() -> list[tuple[str, str]]:
    """(directory, name) for every module and package the README's tree block names."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## How it is built", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in section.split("```")[1::2] if b.lstrip("\n").startswith("gateway/"))
    names: list[tuple[str, str]] = []
    root = sub = ""
    for line in block.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            root, sub = line.split()[0].rstrip("/"), ""
            continue
        head = line.split()[0]
        if line.startswith("  ") and not line.startswith("   ") and head.endswith("/"):
            sub = head.rstrip("/")
        listed = re.sub(r"\([^)]*\)", "", line.split("   ")[0] if head.endswith(".py") else line)
        for token in re.findall(r"(?<![\w./])([A-Za-z_]\w*(?:\.py|/))(?=[\s,]|$)", listed):
            names.append((f"{root}/{sub}" if sub and token.rstrip("/") != sub else root, token))
    return names


def test_how_it_is_built_names_only_what_exists() -> None:
    missing = []
    for where, token in _built_tree():
        candidates = [ROOT / where / token, ROOT / where.split("/")[0] / token]
        if not any(c.exists() for c in candidates):
            missing.append(f"{where}/{token}")
    assert not missing, f"README 'How it is built' names what the tree lacks: {missing}"


def test_how_it_is_built_names_every_package_and_top_level_module() -> None:
    named = {token.rstrip("/").removesuffix(".py") for _, token in _built_tree()}
    actual = {p.stem for top in ("gateway", "adapters") for p in (ROOT / top).iterdir()
              if (p.suffix == ".py" or (p / "__init__.py").exists()) and not p.name.startswith("_")}
    assert actual <= named, f"README 'How it is built' leaves out {sorted(actual - named)}"
