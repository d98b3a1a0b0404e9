"""The configurations shipped with the package, by name: `LC-A` ... `LPIS-K`, `flair-hub`, `demo`, `zonal`.

They live in the repository's `configs/` folder; `trainer/configs` is a link to it, so the wheel
carries them as package data of `trainer` and an installed package finds them at the same place
relative to this file as a clone does. Names:

- every `configs/seed/<NAME>.yaml` by its stem (the 24 configurations of the FLAIR-HUB table);
- every folder of `configs/` (`flair-hub`: the reference defaults, `demo`: the CPU demo);
- every `configs/<NAME>.yaml` by its stem (`zonal`: the zonal-detection template).

No import here beyond the standard library: the config layer, the API and every console script
use it, and none of them should pay for it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
"""`configs/` of the checkout (through the `trainer/configs` link) or of the installed package."""


@lru_cache(maxsize=None)
def builtin_configs() -> dict[str, Path]:
    """Name -> path of every shipped config (empty when the package was installed without them)."""
    if not CONFIG_ROOT.is_dir():
        return {}
    names: dict[str, Path] = {}
    for p in sorted((CONFIG_ROOT / "seed").glob("*.yaml")):
        names[p.stem] = p
    for p in sorted(CONFIG_ROOT.iterdir()):
        if p.is_dir() and p.name != "seed" and any(p.glob("*.yaml")):
            names[p.name] = p
        elif p.suffix == ".yaml":
            names[p.stem] = p
    return names


def builtin_config(name: str) -> Path:
    """The path of the shipped config `name`; KeyError listing the names when there is none."""
    shipped = builtin_configs()
    if name not in shipped:
        raise KeyError(f"no built-in config {name!r} (built-in: {', '.join(shipped) or 'none installed'})")
    return shipped[name]
