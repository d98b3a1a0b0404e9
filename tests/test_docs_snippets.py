"""Every Python block of README.md and docs/loading.md runs as written.

Each block runs in a fresh interpreter, in a folder where `shards/` is a packed toy dataset and
`configs/` the repository's configs, as a user's working copy would be.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/loading.md")
BLOCKS = [(doc, i, code) for doc in DOCUMENTS
          for i, code in enumerate(re.findall(r"```python\n(.*?)```", (REPO / doc).read_text(), re.S))]


def test_the_documents_have_python_examples():
    assert {doc for doc, _, _ in BLOCKS} == set(DOCUMENTS)
    assert any("flair_stream.open_dataset" in code for _, _, code in BLOCKS)


@pytest.fixture(scope="module")
def workdir(toy_shards, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("docs")
    (work / "shards").symlink_to(toy_shards.out, target_is_directory=True)
    (work / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    return work


@pytest.mark.parametrize("doc,number,code", BLOCKS, ids=[f"{d}#{i}" for d, i, _ in BLOCKS])
def test_python_block_runs(doc, number, code, workdir):
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{doc} block {number} failed:\n{code}\n{proc.stderr[-3000:]}"
    if "plot_sample(" in code and '"patch.png"' in code:
        assert (workdir / "patch.png").stat().st_size > 10_000
