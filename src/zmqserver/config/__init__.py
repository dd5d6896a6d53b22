"""The server's options: what they are, whether they fit together, where they come from.

* schema.py: the :class:`Config` dataclass, one field per option (help text, CLI details), the
  values derived from them and the type coercion every source goes through;
* validate.py: the checks of a combination of options, run once where a Config is built;
* sources.py: the TOML file, ``ZMQSERVER_*`` environment variables and CLI flags, layered.

What other modules import is re-exported here: ``from zmqserver.config import Config``.
"""

from __future__ import annotations

from .schema import (
    HOOKS,
    App,
    Config,
    Hook,
    ServiceSpec,
    option,
    options_table,
    parse_services,
    show_default,
)
from .validate import LOG_LEVELS, MAX_SERVICE_NAME

__all__ = [
    "HOOKS",
    "LOG_LEVELS",
    "MAX_SERVICE_NAME",
    "App",
    "Config",
    "Hook",
    "ServiceSpec",
    "option",
    "options_table",
    "parse_services",
    "show_default",
]
