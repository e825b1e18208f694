"""``python -m caffelike``: same as the ``caffelike`` command."""
import sys

from .cli import main

sys.exit(main())
