"""The Hugging Face Hub's URLs: `hf://datasets/<owner>/<name>[@rev]/<path>`, resolve URLs, and the API.

One parser serves the packer (reading the published zips) and the loader (reading packed shards,
`packer.storage.read`). The Hub's documented HTTP endpoints used here:

- `GET <endpoint>/datasets/<owner>/<name>/resolve/<rev>/<path>`: a file's bytes (it honours `Range`,
  usually after a redirect to a CDN);
- `GET <endpoint>/api/datasets/<owner>/<name>/revision/<rev>`: the commit (`sha`) a branch or tag
  points to, so that a whole pack reads one snapshot even if the repository moves meanwhile;
- `GET <endpoint>/api/datasets/<owner>/<name>/tree/<rev>/<path>?recursive=true`: the files under
  `<path>` as a JSON list of `{type, path, size, ...}`, in pages of at most 1,000 entries linked
  by an RFC 8288 `Link: <url>; rel="next"` header (huggingface_hub's `list_repo_tree` follows the
  same links).

The base URL is `$HF_ENDPOINT` (a mirror, or a local server in the tests) and `$HF_TOKEN`, when
set, is sent as `Authorization: Bearer ...` to that host only, never to the CDN it redirects to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
TOKEN_ENV = "HF_TOKEN"


def hf_endpoint(explicit: str | None = None) -> str:
    """`explicit`, else `$HF_ENDPOINT`, else the public Hub; without a trailing slash."""
    return (explicit or os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/")


def hf_token() -> str | None:
    return os.environ.get(TOKEN_ENV) or None


def auth_headers() -> dict[str, str]:
    """The Hub's bearer header when `$HF_TOKEN` is set (callers decide which host gets it)."""
    token = hf_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def token_note() -> str:
    """For error messages: whether a token went with the request (never the token itself)."""
    return f"${TOKEN_ENV} was sent" if hf_token() else f"no ${TOKEN_ENV} was set"


@dataclass(frozen=True)
class HfPath:
    """`hf://datasets/<owner>/<name>[@revision]/<path>` taken apart."""

    owner: str
    name: str
    revision: str = "main"
    path: str = ""  # inside the repository, no leading or trailing slash

    @classmethod
    def parse(cls, url: str) -> "HfPath":
        if not url.startswith("hf://"):
            raise ValueError(f"{url}: expected hf://datasets/<owner>/<name>[@revision]/<path>")
        parts = [p for p in url[len("hf://"):].split("/")]
        if len(parts) < 3 or parts[0] != "datasets" or not parts[1] or not parts[2]:
            raise ValueError(f"{url}: expected hf://datasets/<owner>/<name>[@revision]/<path>")
        owner, name, rest = parts[1], parts[2], parts[3:]
        rev = "main"
        if "@" in name:
            name, rev = name.split("@", 1)
            if rev == "refs" and len(rest) >= 2:  # a Hub ref with slashes: refs/pr/<n>, refs/convert/<x>
                rev, rest = f"refs/{rest[0]}/{rest[1]}", rest[2:]
        if not name:
            raise ValueError(f"{url}: expected hf://datasets/<owner>/<name>[@revision]/<path>")
        if not rev:
            raise ValueError(f"{url}: empty revision after '@'")
        return cls(owner, name, rev, "/".join(p for p in rest if p))

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.name}"

    def at(self, revision: str) -> "HfPath":
        return HfPath(self.owner, self.name, revision, self.path)

    def url(self) -> str:
        """Back to `hf://...` (with the revision spelled out)."""
        return f"hf://datasets/{self.repo_id}@{self.revision}" + (f"/{self.path}" if self.path else "")

    def resolve_url(self, endpoint: str | None = None, path: str | None = None) -> str:
        """The resolve URL of `path` (default: this path) at this revision."""
        rel = self.path if path is None else path
        base = f"{hf_endpoint(endpoint)}/datasets/{self.repo_id}/resolve/{quote(self.revision, safe='')}"
        return f"{base}/{quote(rel)}" if rel else base

    def revision_api_url(self, endpoint: str | None = None) -> str:
        return f"{hf_endpoint(endpoint)}/api/datasets/{self.repo_id}/revision/{quote(self.revision, safe='')}"

    def tree_api_url(self, endpoint: str | None = None) -> str:
        """First page of the recursive listing of this path (follow `Link: rel="next"` for the rest)."""
        base = f"{hf_endpoint(endpoint)}/api/datasets/{self.repo_id}/tree/{quote(self.revision, safe='')}"
        return (f"{base}/{quote(self.path, safe='')}" if self.path else base) + "?recursive=true&expand=false"


def hf_base_url(url: str, endpoint: str | None = None) -> str:
    """`hf://datasets/<owner>/<name>[@rev]/<path>` -> `<endpoint>/datasets/<owner>/<name>/resolve/<rev>/<path>`."""
    return HfPath.parse(url).resolve_url(endpoint)


def hub_path_of_https(url: str) -> tuple[str, HfPath] | None:
    """(endpoint, HfPath) when `url` is a Hub file URL: `https://host/datasets/o/n/resolve/rev/path`,
    or the `tree/` or `blob/` page a browser shows for it."""
    parts = urlsplit(url)
    segs = parts.path.split("/")
    try:
        i = segs.index("datasets")
    except ValueError:
        return None
    if len(segs) < i + 5 or segs[i + 3] not in ("resolve", "tree", "blob") or not segs[i + 1] or not segs[i + 2]:
        return None
    prefix = "/".join(segs[:i])
    endpoint = f"{parts.scheme}://{parts.netloc}{prefix}"
    return endpoint, HfPath(segs[i + 1], segs[i + 2], unquote(segs[i + 4]), "/".join(s for s in segs[i + 5:] if s))
