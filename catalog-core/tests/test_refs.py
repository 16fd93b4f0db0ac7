"""Model refs (PRV-01): the three accepted forms, their canonical text, and refusals."""

from __future__ import annotations

import pytest
from catalog_core import FileRef, HfRef, HttpRef, InvalidModelRef, ModelRef, parse_model_ref
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("file:/srv/models/tiny.gguf", FileRef("/srv/models/tiny.gguf")),
        ("file:///srv/models/tiny.gguf", FileRef("/srv/models/tiny.gguf")),
        ("hf:org/repo/tiny.gguf", HfRef("org/repo", "tiny.gguf")),
        ("hf:org/repo@main/q4/tiny.gguf", HfRef("org/repo", "q4/tiny.gguf", "main")),
        ("hf:Org.x/re_po-1@v1.0/a@b.gguf", HfRef("Org.x/re_po-1", "a@b.gguf", "v1.0")),
        ("https://example.org/m/tiny.gguf", HttpRef("https://example.org/m/tiny.gguf")),
        ("HTTPS://example.org/tiny.gguf?x=1", HttpRef("https://example.org/tiny.gguf?x=1")),
        ("http://127.0.0.1:8000/tiny.gguf", HttpRef("http://127.0.0.1:8000/tiny.gguf")),
        ("http://localhost/a%20b.gguf", HttpRef("http://localhost/a%20b.gguf")),
    ],
)
def test_accepted_refs_parse_to_their_values(text: str, expected: ModelRef) -> None:
    assert parse_model_ref(text) == expected
    assert parse_model_ref(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("/srv/models/tiny.gguf", "expected file:"),
        ("file:relative/tiny.gguf", "absolute"),
        ("file://host/tiny.gguf", "no host"),
        ("hf:repo-without-org.gguf", "expected hf:"),
        ("hf:org/repo", "expected hf:"),
        ("hf:org/repo/../secrets.gguf", "expected hf:"),
        ("hf:org/repo//tiny.gguf", "expected hf:"),
        ("hf:org/repo@/tiny.gguf", "expected hf:"),
        ("hf:org/repo@re v/tiny.gguf", "expected hf:"),
        ("http://example.org/tiny.gguf", "loopback"),
        ("https://user:s3cr3tpw@example.org/tiny.gguf", "credentials"),
        ("https://example.org/", "file name"),
        ("https://example.org/tiny.gguf#frag", "fragment"),
        ("https://example.org:notaport/tiny.gguf", "not a URL"),
        ("ftp://example.org/tiny.gguf", "expected file:"),
    ],
)
def test_malformed_or_unsafe_refs_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidModelRef, match=reason) as caught:
        parse_model_ref(text)
    assert "s3cr3tpw" not in str(caught.value)


def test_derived_names_come_from_the_last_path_segment() -> None:
    assert FileRef("/a/b/tiny.gguf").filename == "tiny.gguf"
    url = HttpRef("https://example.org:8443/x/a%20b.gguf?sig=1")
    assert (url.host, url.filename) == ("example.org", "a b.gguf")


_NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}", fullmatch=True)
_SEGMENT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"), min_size=1
).filter(lambda s: s not in (".", ".."))
_REPO_PATH = st.lists(_SEGMENT, min_size=1, max_size=3).map("/".join)
_FILE_REF = st.builds(
    FileRef, st.lists(_SEGMENT, min_size=1, max_size=4).map(lambda s: "/" + "/".join(s))
)
_HF_REF = st.builds(HfRef, st.tuples(_NAME, _NAME).map("/".join), _REPO_PATH, st.none() | _NAME)
_HTTP_REF = st.builds(
    lambda host, path, name: HttpRef(f"https://{host}/{path}{name}.gguf"),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){1,2}", fullmatch=True),
    st.from_regex(r"([a-z0-9_-]{1,6}/){0,3}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True),
)


@given(st.one_of(_FILE_REF, _HF_REF, _HTTP_REF))
def test_every_ref_round_trips_through_its_text(ref: ModelRef) -> None:
    assert parse_model_ref(str(ref)) == ref
