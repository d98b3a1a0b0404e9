"""`flair-train`: the training entry point as a console script (one process).

Same arguments and behaviour as `accelerate launch trainer/train.py`; for several processes,
GPUs or nodes use `accelerate launch` (see docs/training.md).
"""

from __future__ import annotations

import sys

from trainer.train import main as _train_main


def main(argv: list[str] | None = None) -> int:
    return _train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
