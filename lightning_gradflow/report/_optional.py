"""The report's optional dependencies (the ``tensorboard`` extra), with an install hint."""

from __future__ import annotations

import importlib

INSTALL_HINT = 'pip install "lightning-gradflow[tensorboard]"'
NEEDED = ("tensorboard", "matplotlib")


def require_report_dependencies() -> None:
    """Import TensorBoard and matplotlib, or raise an ImportError naming the extra to install.

    Example:
        >>> require_report_dependencies()  # both installed here
    """
    for module in NEEDED:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ImportError(
                f"the gradient-flow report needs {module!r}; install it with {INSTALL_HINT}"
            ) from err
