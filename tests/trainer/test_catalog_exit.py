"""A process that read the index with torch loaded exits cleanly.

Reading Parquet from memory that Python owns made about one run in four abort at interpreter
exit ("terminate called without an active exception", pyarrow 26 / torch 2.14); the catalog now
reads a local index by its path and a remote one without Arrow threads calling into Python (`Catalog._open_index`). Six fresh interpreters catch
the old behaviour with a probability of about 0.8.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

CODE = """
import sys
import torch
from trainer.data.catalog import Catalog
from packer.storage.read import open_source
print(Catalog(open_source(sys.argv[1])).table.num_rows)
"""


def test_reading_the_index_with_torch_loaded_exits_cleanly(toy_shards):
    for _ in range(6):
        proc = subprocess.run([sys.executable, "-c", CODE, str(toy_shards.out)], capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert int(proc.stdout.split()[-1]) == 12
