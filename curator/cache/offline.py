"""Importing an optional model library with the model hubs turned off (models are local)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from curator.errors import FailedPrecondition

__all__ = ["offline_import"]


def offline_import(*names: str, install: str) -> list[ModuleType]:
    """The modules `names`, imported with HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set (so no
    library reaches for a hub); FailedPrecondition naming `install` when one is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        return [importlib.import_module(n) for n in names]
    except ImportError as e:
        raise FailedPrecondition(f"expected the optional extra ({install}), got {e}") from None
