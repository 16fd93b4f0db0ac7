"""Package mode passes pip's configured find-links on to uv (uv does not read pip's config)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from provisioners.engines.facts import parse_pip_find_links, pip_find_links


def test_one_find_links_value_may_name_several_locations() -> None:
    assert parse_pip_find_links(" /opt/wheels  file:///x\t/y ") == (
        "/opt/wheels",
        "file:///x",
        "/y",
    )
    assert parse_pip_find_links("") == ()


@pytest.mark.skipif(shutil.which("pip3") is None and shutil.which("pip") is None, reason="no pip")
async def test_find_links_come_from_pips_config_files_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nfind-links = /srv/wheels-a /srv/wheels-b\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", "/srv/from-env")
    links = await pip_find_links(None)
    assert links[0] == "/srv/from-env"
    assert {"/srv/wheels-a", "/srv/wheels-b"} <= set(links)
    assert len(links) == len(set(links))
