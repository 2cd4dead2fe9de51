"""The upload button: a chosen photo is saved under its own name and handed on; a rejected
one shows its reason."""

from __future__ import annotations

import datetime

import pytest

from catsdogs_helpers import widgets

pytest.importorskip("ipywidgets")


def _upload(name: str, content: bytes) -> dict:
    return {
        "name": name, "type": "image/jpeg", "size": len(content), "content": memoryview(content),
        "last_modified": datetime.datetime.now(datetime.timezone.utc),
    }  # fmt: skip


def test_an_uploaded_photo_is_saved_in_the_folder_and_handed_on(tmp_path):
    seen = []
    box = widgets.photo_upload(seen.append, tmp_path / "uploads")
    upload, shown = box.children
    upload.value = (_upload("../../outside.jpg", b"jpeg bytes"),)
    assert seen == [tmp_path / "uploads" / "outside.jpg"], "saved inside the folder only"
    assert seen[0].read_bytes() == b"jpeg bytes"
    assert not (tmp_path / "outside.jpg").exists()


def test_a_rejected_photo_shows_its_reason_not_a_traceback(tmp_path):
    def reject(path):
        raise ValueError(f"{path.name}: truncated")

    box = widgets.photo_upload(reject, tmp_path)
    upload, shown = box.children
    upload.value = (_upload("cut.jpg", b"x"),)
    assert "cut.jpg: truncated" in str(shown.outputs)


def test_both_ipywidgets_upload_formats_read_alike():
    eight = (_upload("a.jpg", b"A"),)
    seven = {"a.jpg": {"metadata": {"name": "a.jpg"}, "content": b"A"}}
    for value in (eight, seven):
        (item,) = widgets.uploaded_files(value)
        assert item["name"] == "a.jpg" and bytes(item["content"]) == b"A"
