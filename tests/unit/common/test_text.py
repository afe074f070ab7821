"""Text at the Tango border (servers.common.text)."""

from __future__ import annotations

import pytest

from servers.common.text import describe_characters, tango_text, text_in, text_out


@pytest.mark.parametrize("text", ["plain", "café µm", "a–b", "画像.tif", "😀", "a\ud800b"])
def test_tango_text_is_always_latin1_and_keeps_latin1_unchanged(text: str) -> None:
    safe = tango_text(text)
    safe.encode("latin-1")
    if all(ord(c) < 256 for c in text):
        assert safe == text


@pytest.mark.parametrize("text", ["plain", "café", "a–b", "画像.tif", "😀"])
def test_a_name_sent_as_utf8_bytes_or_latin1_str_is_read_back_as_meant(text: str) -> None:
    as_received = text.encode("utf-8").decode("latin-1")  # what pytango hands the server for bytes
    assert text_in(as_received) == text
    if all(ord(c) < 256 for c in text):
        assert text_in(text) == text  # sent as a str
    reply = text_out(text)
    assert (reply if isinstance(reply, str) else reply.decode("utf-8")) == text


def test_describe_characters_names_them() -> None:
    assert describe_characters("a–b😀", {"–", "😀"}) == "U+2013 EN DASH, U+1F600 GRINNING FACE"
