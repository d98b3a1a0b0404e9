"""PEP 562 exports for the package roots of the middle layer (`trainer`, `trainer.data`).

A root lists its public names and the module each lives in (`"module"`, or `"module:name"` when
the public name differs; `"package:submodule"` exports a submodule itself); a name is imported on first use, so importing the root (or one light
module below it, like `trainer.data.catalog`) stays cheap and does not import torch.

A public name must not be the name of a submodule of its package: once that submodule is
imported, Python sets the package attribute to the module and `__getattr__` is never asked
(hence `trainer.data.collate_batch` for `trainer.data.collate.collate`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str],
                 namespace: Mapping[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose module globals are `namespace`."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            module, _, attr = exports[name].partition(":")
            target = import_module(module)
            if not hasattr(target, attr or name):  # a submodule not imported yet
                return import_module(f"{module}.{attr or name}")
            return getattr(target, attr or name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
