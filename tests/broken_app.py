"""An app module that cannot be imported: a worker loading it must stop the server."""

raise RuntimeError("this module is broken on purpose")
