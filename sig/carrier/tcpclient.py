"""The seed's import path ``from sig.carrier.tcpclient import *``.

The code is :mod:`sig.compat.tcpclient`.
"""

from sig.compat.tcpclient import *  # noqa: F403
from sig.compat.tcpclient import __all__ as __all__
