"""The subpackage imports without the ``recipes`` extra and says how to get it when needed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from recipes.volatility.baselines import garch
from recipes.volatility.sources import load_ohlc
from tests.helpers.subprocess_runs import ROOT


def test_import_does_not_pull_optional_dependencies() -> None:
    code = (
        "import sys, recipes.volatility; "
        "print(sorted(m for m in ('arch', 'pandas', 'hydra') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_missing_arch_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "arch"] + ["arch", "arch.data.sp500"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: import fails
    with pytest.raises(ImportError, match=r"lightning-gradflow\[recipes\]"):
        load_ohlc("sp500")
    origins = np.arange(21, 60)
    with pytest.raises(ImportError, match=r"lightning-gradflow\[recipes\]"):
        garch(np.ones(100), np.ones(100), origins, np.arange(60, 99))
