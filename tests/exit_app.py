"""An app module whose import ends the process (``os._exit(7)``), as a native crash or a stray
``os._exit`` in a C extension's init would: no ImportError, so no BOOT_ERROR."""

import os

os._exit(7)
