"""Optional-dependency imports with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

INSTALL_HINT = 'pip install "lightning-gradflow[recipes]"'


def require(module: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that says how to install it.

    Example:
        >>> require("numpy").__name__
        'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{module!r} is needed here; install it with {INSTALL_HINT}") from err
