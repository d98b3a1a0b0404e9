"""Former home of the member encoding, now `packer.shardformat.encoding`.

Kept because docs/packing.md showed `from packer.codec import wds_decoder`, so user code may import
it: this module *is* `packer.shardformat.encoding` (the same objects, so patching either patches
both). A package rather than a `codec.py` file, so that git sees codec.py as moved and edits made
to it elsewhere merge into its new home.
"""

import sys

from packer.shardformat import encoding

sys.modules[__name__] = encoding
