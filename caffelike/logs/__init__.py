"""Reading Caffe training logs: :mod:`.parse` (the tables of Caffe's parse_log.py) and
:mod:`.plot` (training curves). Neither imports torch."""
