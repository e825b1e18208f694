"""The one image-list reader (ImageData's source, convert_imageset's list, classify's -list):
Caffe's ``path label`` lines split at the last space; errors name the list file and line."""
from __future__ import annotations

import pathlib

import pytest

from caffelike.errors import DataError
from caffelike.io.image_list import ListEntry, read_image_list


def test_labels_required_by_default(tmp_path: pathlib.Path) -> None:
    lst = tmp_path / "l.txt"
    lst.write_text("a.jpg 1\n\nsub dir/b.png 0\n")
    assert read_image_list(str(lst)) == [ListEntry("a.jpg", 1, 1), ListEntry("sub dir/b.png", 0, 3)]
    lst.write_text("a.jpg 1\nc.jpg\n")
    with pytest.raises(DataError, match=r"l.txt:2: expected 'path label', got 'c.jpg'"):
        read_image_list(str(lst))


def test_read_image_list_with_optional_labels(tmp_path: pathlib.Path) -> None:
    lst = tmp_path / "l.txt"
    lst.write_text("a.jpg 1\n\nsub dir/b.png 0\nc.jpg\n")
    assert read_image_list(str(lst), labels_required=False) == [
        ListEntry("a.jpg", 1, 1), ListEntry("sub dir/b.png", 0, 3), ListEntry("c.jpg", None, 4)]
    lst.write_text("a.jpg one\n")
    with pytest.raises(DataError, match=r"l.txt:1: label 'one' is not an integer \(expected 'path label'\)"):
        read_image_list(str(lst), labels_required=False)


def test_empty_and_missing_lists(tmp_path: pathlib.Path) -> None:
    lst = tmp_path / "l.txt"
    lst.write_text("\n\n")
    with pytest.raises(DataError, match=r"l.txt: image list is empty"):
        read_image_list(str(lst), labels_required=False)
    with pytest.raises(DataError, match=r"cannot open image list '.*nope.txt'"):
        read_image_list(str(tmp_path / "nope.txt"))
