"""An app module whose import kills the process with SIGSEGV, as a broken C extension does."""

import os
import signal

os.kill(os.getpid(), signal.SIGSEGV)
