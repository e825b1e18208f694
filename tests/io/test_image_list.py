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


# -- the book fork's multi-label lists (Caffe_Long ReadImagesList) ---------------------------

def test_multi_label_lines(tmp_path: pathlib.Path) -> None:
    lst = tmp_path / "l.txt"
    lst.write_text("a.jpg 0 4 7\n\n  b.jpg\t1 2 -3\n")
    entries = read_image_list(str(lst), labels=2)
    assert entries == [ListEntry("a.jpg", 0, 1, (4,)), ListEntry("b.jpg", 1, 3, (2,))]
    assert [e.labels for e in entries] == [(0, 4), (1, 2)]  # the first label_size of each line
    assert read_image_list(str(lst), labels=3)[1].labels == (1, 2, -3)
    floats = tmp_path / "f.txt"
    floats.write_text("a.jpg 0.5 -1e-2\n")
    assert read_image_list(str(floats), labels=2, label_type=float)[0].labels == (0.5, -0.01)


def test_multi_label_errors_name_file_and_line(tmp_path: pathlib.Path) -> None:
    lst = tmp_path / "l.txt"
    lst.write_text("a.jpg 0 1\nb.jpg 1\n")
    with pytest.raises(DataError, match=r"l.txt:2: expected 'path' and 2 labels, got 1 label in 'b.jpg 1'"):
        read_image_list(str(lst), labels=2)
    lst.write_text("a.jpg 0 1\nb.jpg 1 2 3\n")
    with pytest.raises(DataError, match=r"l.txt:2: 3 labels, but the first line has 2; every line must "
                                        r"carry the same number of labels"):
        read_image_list(str(lst), labels=2)
    lst.write_text("a.jpg 0 x\n")
    with pytest.raises(DataError, match=r"l.txt:1: label 'x' is not an integer \(expected 'path' and 2 "
                                        r"labels separated by spaces; paths cannot hold spaces here\)"):
        read_image_list(str(lst), labels=2)
    lst.write_text("\n")
    with pytest.raises(DataError, match=r"l.txt: image list is empty; expected 'path' and 2 labels lines"):
        read_image_list(str(lst), labels=2)
