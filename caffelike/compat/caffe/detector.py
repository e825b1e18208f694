"""``caffe.detector``: caffelike.detector (imported on first use: it needs the Net)."""
import sys

import caffelike.detector

sys.modules[__name__] = caffelike.detector
