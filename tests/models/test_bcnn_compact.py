"""The bilinear CNN with Caffe_Long's layers (models/bcnn/compact_*): the book chapter's own model,
shipped unchanged but for its data paths, its deploy net, and a small CompactBilinear B-CNN that
learns on generated stripes."""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

import caffelike as caffe

from .book_data import CORPUS, prepare
from .test_bcnn import _tiny_data, tiny_solver

ROOT = pathlib.Path(__file__).resolve().parents[2]
BCNN = ROOT / "models" / "bcnn"
CHAPTER = CORPUS / "longpeng2008__yousan.ai" / "imgrec_book_ch4_finegrained"
PATHS = {'source: "train_shuffle.txt"': 'source: "data/cub200/train.txt"',
         'source: "test_shuffle.txt"': 'source: "data/cub200/test.txt"',
         'root_folder: "images/"': 'root_folder: "data/cub200/images/"'}


@pytest.fixture
def make_bcnn(monkeypatch):
    monkeypatch.syspath_prepend(str(BCNN))
    import make_bcnn

    yield make_bcnn
    sys.modules.pop("make_bcnn", None)


def _without_comments(text: str) -> list[str]:
    return [line for line in text.split("\n") if not line.startswith("#")]


def test_compact_model_is_the_chapters_own() -> None:
    book = (CHAPTER / "ft_last_layer.prototxt").read_text()
    for old, new in PATHS.items():
        book = book.replace(old, new)
    assert _without_comments((BCNN / "compact_train_val.prototxt").read_text()) == _without_comments(book)
    solver = _without_comments((BCNN / "compact_solver.prototxt").read_text())
    chapter = _without_comments((CHAPTER / "ft_last_layer.solver").read_text())
    changed = {(a, b) for a, b in zip(chapter, solver) if a != b}
    assert len(solver) == len(chapter) and changed == {
        ('snapshot_prefix: "snapshot/ft_last_layer"', 'snapshot_prefix: "runs/bcnn_compact/ft_last_layer"'),
        ('net: "ft_last_layer.prototxt"', 'net: "models/bcnn/compact_train_val.prototxt"')}


def test_compact_deploy_is_written_from_the_train_net(make_bcnn, tmp_path: pathlib.Path, monkeypatch) -> None:
    written = str(make_bcnn.deploy_from(str(BCNN / "compact_train_val.prototxt")))
    assert _without_comments((BCNN / "compact_deploy.prototxt").read_text()) == _without_comments(written)
    deploy = caffe.Net(str(BCNN / "compact_deploy.prototxt"), caffe.TEST)
    assert deploy.blobs["bilinear"].data.shape == (1, 8192, 1, 1)
    assert deploy.blobs["prob"].data.shape == (1, 200)
    # the train/val net on a generated list (ImageData 512 -> crop 448) has the same parameters
    path = prepare(BCNN / "compact_train_val.prototxt", tmp_path, classes=200, images=4)
    monkeypatch.chdir(tmp_path)
    for phase in (caffe.TRAIN, caffe.TEST):
        net = caffe.Net(str(path), phase)
        assert net.blobs["data"].data.shape[1:] == (3, 448, 448)
        assert {k: [b.data.shape for b in v] for k, v in net.params.items()} == \
            {k: [b.data.shape for b in v] for k, v in deploy.params.items()}


def test_small_compact_bcnn_trains(make_bcnn, tmp_path: pathlib.Path) -> None:
    listing = _tiny_data(tmp_path)
    net = make_bcnn.bcnn(str(listing), str(listing), root_folder=str(tmp_path) + "/", classes=2, crop=16,
                         blocks=((4,), (6,)), batch=8, test_batch=8, finetune_trunk=True,
                         bilinear_layer="CompactBilinear", compact_dim=64)
    solver = tiny_solver(tmp_path, net)
    train = solver.net
    assert [train.layer_dict[n].type for n in ("bilinear", "bilinear_sqrt", "bilinear_l2")] == \
        ["CompactBilinear", "SignedSqrt", "L2Normalize"]
    assert train.blobs["bilinear_l2"].data.shape == (8, 64, 1, 1)
    test_net = solver.test_nets[0]

    def test_loss() -> float:
        test_net.share_with(train)
        return float(np.mean([float(test_net.forward()["loss"]) for _ in range(3)]))

    before = test_loss()
    solver.step(30)
    after = test_loss()
    assert after < 0.5 * before, (before, after)
    train.forward()
    z = train.blobs["bilinear_l2"].data.reshape(8, -1)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-3)
