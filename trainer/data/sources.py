"""Former home of the loader's readers, now `packer.storage.read` (the storage package that the
packer's writers share). Kept because `trainer.data.sources.open_source` was documented: this
module *is* `packer.storage.read` (same objects, so patching either patches both). New code
imports `trainer.data` (the public root) or `packer.storage.read`.
"""

import sys

from packer.storage import read

sys.modules[__name__] = read
