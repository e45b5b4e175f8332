"""Types of the compiled rule loop (``_rules.pyx``); the pure twin is
``kservice.engine.compile._Builder.emit_rules``."""

from kservice.engine.compile import _Builder

def emit_rules(b: _Builder) -> None: ...
