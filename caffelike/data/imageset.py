"""An image list -> a DB of Datum records (``caffelike convert_imageset``, Caffe's tool).

Reads ``path label`` lines, loads ``ROOTFOLDER + path`` with OpenCV (colour unless
``-gray``, resized when ``-resize_height``/``-resize_width`` are both > 0), and stores a
``Datum`` per image under the key ``%08d_<path>`` (line number after an optional
``-shuffle``): raw CHW bytes, or with ``-encoded`` the file's own bytes when they already
have the wanted encoding and no resize/colour change applies, else ``cv::imencode`` output.

Differences from Caffe: an unreadable image is an error naming the list file and line
(Caffe logs it and skips the line); ``-random_seed`` pins ``-shuffle``.
"""
from __future__ import annotations

import os
import numpy as np

from ..errors import DataError, Where
from ..io.image_list import ListEntry, read_image_list
from ..glog import get_logger
from ..proto import caffe_pb2
from .dbwrite import open_db_writer
from .images import encode_image, extension_matches, image_to_datum, read_image

log = get_logger("convert_imageset")


def make_datum(path: str, label: int, resize_height: int, resize_width: int, is_color: bool,
               encoding: str) -> caffe_pb2.Datum | None:
    """Caffe's ReadImageToDatum; ``None`` when the image cannot be read or encoded."""
    img = read_image(path, resize_height, resize_width, is_color)
    if img is None:
        return None
    if encoding:
        if (img.shape[2] == 3) == is_color and not resize_height and not resize_width \
                and extension_matches(path, encoding):
            with open(path, "rb") as handle:
                data = handle.read()
        else:
            data = encode_image(img, encoding)
            if data is None:
                return None
        datum = caffe_pb2.Datum()
        datum.data, datum.label, datum.encoded = data, int(label), True
        return datum
    return image_to_datum(img, label)


def convert(root: str, list_file: str, db_name: str, *, resize_height: int = 0,
            resize_width: int = 0, gray: bool = False, shuffle: bool = False,
            encoded: bool = False, encode_type: str = "", backend: str = "lmdb",
            check_size: bool = False, seed: int | None = None) -> int:
    """Write the DB; returns the number of records."""
    entries: list[ListEntry] = read_image_list(list_file)
    if shuffle:
        log.info("Shuffling data")
        order = np.random.default_rng(seed).permutation(len(entries))
        entries = [entries[i] for i in order]
    log.info("A total of %d images.", len(entries))
    if encode_type and not encoded:
        log.info("encode_type specified, assuming encoded=true.")
    resize_height, resize_width = max(0, resize_height), max(0, resize_width)
    data_size = None
    count = 0
    with open_db_writer(db_name, backend) as writer:
        for line_id, entry in enumerate(entries):
            where = Where(file=list_file, line=entry.line)
            enc = encode_type
            if encoded and not enc:
                if "." not in entry.path:
                    raise DataError(f"cannot guess the encoding of '{entry.path}' from its name; "
                                    "give -encode_type", where)
                enc = entry.path.rsplit(".", 1)[1].lower()
            path = root + entry.path
            datum = make_datum(path, entry.label, resize_height, resize_width, not gray, enc)
            if datum is None:
                reason = "no such file" if not os.path.exists(path) else "not a readable image"
                raise DataError(f"cannot read image '{path}': {reason}", where)
            if check_size:
                size = len(datum.data)
                if data_size is None:
                    data_size = size
                elif size != data_size:
                    raise DataError(f"image '{path}' gives {size} bytes of data, the first gave "
                                    f"{data_size} (-check_size)", where)
            writer.put(f"{line_id:08d}_{entry.path}".encode(), datum.SerializeToString())
            count += 1
            if count % 1000 == 0:
                writer.commit()
                log.info("Processed %d files.", count)
    if count % 1000:
        log.info("Processed %d files.", count)
    return count

