"""``caffe.classifier``: caffelike.classifier (imported on first use: it needs the Net)."""
import sys

import caffelike.classifier

sys.modules[__name__] = caffelike.classifier
