"""Packing straight from zips on the Hugging Face Hub, over HTTP range requests, against a local fake
Hub on 127.0.0.1 (`tools/fake_hub.py`: the Hub's resolve, revision and tree URLs)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from packer import schema
from packer.cli import main
from packer.shardformat.encoding import decode_array
from packer.errors import PackError
from packer.index import read_index
from packer.inspection import read_sample
from packer.pack import SLOW_ENV, STATE_DIR, pack_dataset
from packer.verify import verify_dataset
from packer.zips import TAIL_BYTES
from tools.fake_hub import FakeHub

REPO = Path(__file__).resolve().parents[2]
OPTS = dict(shard_size=3_000_000, seed=3, workers=1, progress=False)
HF_SRC = "hf://datasets/IGNF/FLAIR-HUB"


@pytest.fixture(scope="module")
def tree_pack(toy_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("tree_pack") / "shards"
    pack_dataset(toy_tree.root, out, **OPTS)
    return out


def _zip_requests(hub: FakeHub) -> list:
    return [r for r in hub.requests if r.path.endswith(".zip") and r.method == "GET"]


def test_hub_pack_equals_the_tree_pack(toy_zips, tree_pack, tmp_path, fake_hub, same_pack, monkeypatch):
    """Listing (paginated), revision pinning, CDN redirects, a token, and a server failing once per URL."""
    hub = fake_hub(toy_zips.root, page_size=4, redirect=True, token="hf_secret", flaky=True)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    summary = pack_dataset(HF_SRC, tmp_path / "o", **dict(OPTS, workers=2))
    src = same_pack(tree_pack, tmp_path / "o")
    assert src[1] == f"{HF_SRC}@{FakeHub.sha}"  # the commit main pointed to when the pack started
    pages = [r for r in hub.requests if "/tree/" in r.path]
    assert len(pages) == -(-len(list(toy_zips.root.rglob("*"))) // 4) and any("cursor=" in r.path for r in pages)
    assert any(r.status == 503 for r in hub.requests)  # the retries were exercised
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert cdn and all(r.auth is None for r in cdn)  # the token never leaves the Hub's host
    assert all(r.auth == "Bearer hf_secret" for r in hub.requests if not r.path.startswith("/cdn/"))
    assert all(f"/resolve/{FakeHub.sha}/" in r.path for r in hub.requests if r.path.startswith("/datasets/"))
    assert summary.source.remote and "fetched" in str(summary)


def test_only_the_zips_of_the_modalities_asked_for_are_fetched(toy_tree, toy_zips, tmp_path, fake_hub, same_pack):
    mods = ("AERIAL_RGBI", "AERIAL_LABEL-COSIA")
    hub = fake_hub(toy_zips.root)
    summary = pack_dataset(HF_SRC, tmp_path / "hub", modalities=mods, **OPTS)
    pack_dataset(toy_tree.root, tmp_path / "tree", modalities=mods, **OPTS)
    same_pack(tmp_path / "tree", tmp_path / "hub")
    touched = {r.path.rsplit("/", 1)[-1] for r in _zip_requests(hub)}
    wanted = {z.name for z in (toy_zips.root / "data").glob("*.zip")
              if z.stem == schema.GLOBAL_MTD_FOLDER or z.stem.endswith(mods)}
    assert touched == wanted and len(wanted) == 5
    # the bytes reported are the bytes the server sent: those zips once, plus the end of each read
    # for its directory (the toy's zips are small, so it shows; a real one is gigabytes)
    assert summary.source.bytes == sum(r.nbytes for r in hub.requests)
    zip_bytes = sum((toy_zips.root / "data" / n).stat().st_size for n in wanted)
    assert sum(r.nbytes for r in _zip_requests(hub)) < zip_bytes + len(wanted) * TAIL_BYTES
    assert summary.source.zip_bytes == zip_bytes and summary.source.zips_skipped == 16
    assert summary.source.members.requests == 2 * 12  # one range request per member


def test_https_resolve_url_and_a_plain_web_folder_with_a_list(toy_zips, tree_pack, tmp_path, fake_hub, same_pack,
                                                              capsys):
    hub = fake_hub(toy_zips.root)
    pack_dataset(f"{hub.url}/datasets/IGNF/FLAIR-HUB/resolve/main/data/", tmp_path / "resolve", **OPTS)
    same_pack(tree_pack, tmp_path / "resolve")
    plain = f"{hub.url}/plain/data/"
    assert main(["--src", plain, "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--src-list" in capsys.readouterr().err
    listing = tmp_path / "zips.txt"
    listing.write_text("# the zips of the folder\n" + "\n".join(sorted(z.name for z in (toy_zips.root / "data").glob("*.zip"))))
    pack_dataset(plain, tmp_path / "plain", src_list=str(listing), **OPTS)
    src = same_pack(tree_pack, tmp_path / "plain")
    assert src[1] == plain.rstrip("/")
    assert not any("/api/" in r.path for r in hub.requests if "/plain/" in r.path)


def _one_error_line(capsys, *argv) -> str:
    assert main(["--no-progress", "--workers", "1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flair-pack: error: ") and err.count("\n") == 1, err
    return err


def test_refusals_are_one_line_naming_the_url_and_the_token(toy_zips, tmp_path, fake_hub, monkeypatch, capsys):
    hub = fake_hub(toy_zips.root, statuses={"/revision/main": 404})
    err = _one_error_line(capsys, "--src", "hf://datasets/IGNF/NOPE", "--out", str(tmp_path / "o"))
    assert f"{hub.url}/api/datasets/IGNF/NOPE/revision/main" in err and "no $HF_TOKEN was set" in err

    hub.statuses = {}
    hub.token, hub.gated = "right", True
    monkeypatch.setenv("HF_TOKEN", "wrong")
    err = _one_error_line(capsys, "--src", HF_SRC, "--out", str(tmp_path / "o"))
    assert "HTTP 403" in err and "$HF_TOKEN was sent" in err and "/api/datasets/IGNF/FLAIR-HUB/revision/main" in err

    monkeypatch.setenv("HF_TOKEN", "right")
    name = sorted((toy_zips.root / "data").glob("*_DEM_ELEV.zip"))[0].name
    hub.statuses = {name: 404}
    err = _one_error_line(capsys, "--src", HF_SRC, "--out", str(tmp_path / "o"))
    assert f"/resolve/{FakeHub.sha}/data/{name}: HTTP 404" in err and "$HF_TOKEN was sent" in err
    assert not (tmp_path / "o").exists()


def test_a_server_ignoring_range_is_refused(toy_zips, tmp_path, fake_hub, capsys):
    hub = fake_hub(toy_zips.root, ignore_range=True)
    err = _one_error_line(capsys, "--src", HF_SRC, "--out", str(tmp_path / "o"))
    assert "ignored the Range header" in err and f"{hub.url}/datasets/IGNF/FLAIR-HUB/resolve/" in err
    # it was refused at the first answer, not after downloading every zip whole
    assert sum(r.nbytes for r in hub.requests if r.path.endswith(".zip")) < 5_000_000


def test_a_truncated_remote_zip_is_reported_with_its_url(toy_zips, tmp_path, fake_hub, capsys):
    src = tmp_path / "repo"
    (src / "data").mkdir(parents=True)
    for z in (toy_zips.root / "data").glob("*.zip"):
        data = z.read_bytes()
        (src / "data" / z.name).write_bytes(data[: len(data) * 2 // 3] if "_SPOT_RGBI" in z.name else data)
    hub = fake_hub(src)
    err = _one_error_line(capsys, "--src", HF_SRC, "--out", str(tmp_path / "o"))
    assert re.search(rf"{re.escape(hub.url)}/datasets/IGNF/FLAIR-HUB/resolve/{FakeHub.sha}/data/D\d+-\d+_SPOT_RGBI.zip: "
                     r"not a readable zip", err), err


def test_bodies_cut_short_are_asked_again(toy_zips, tree_pack, tmp_path, fake_hub, same_pack):
    hub = fake_hub(toy_zips.root, cut_once=True)
    pack_dataset(HF_SRC, tmp_path / "o", **OPTS)
    same_pack(tree_pack, tmp_path / "o")
    assert any(r.nbytes and r.status == 206 for r in hub.requests)


# ------------------------------------------------------------------------------------------------
# Resume and parts
# ------------------------------------------------------------------------------------------------
def _member_spans(toy_zips, patch_ids: set[str]) -> dict[str, list[tuple[int, int]]]:
    """zip name -> byte spans (local header + data) of the members of these patches."""
    spans = {}
    for z in (toy_zips.root / "data").glob("*.zip"):
        with zipfile.ZipFile(z) as zf:
            for i in zf.infolist():
                if i.filename.endswith(".tif"):
                    parsed = schema.parse_file_name(i.filename)
                    ids = {p for p in patch_ids if schema.PatchId.parse(p).location_key == parsed.location_key}
                    if ids:
                        end = i.header_offset + 30 + len(i.filename) + len(i.extra) + i.compress_size
                        spans.setdefault(z.name, []).append((i.header_offset, end))
    return spans


def test_killed_remote_pack_resumes_without_fetching_packed_members_again(toy_zips, tmp_path, fake_hub, same_pack):
    hub = fake_hub(toy_zips.root)
    reference = tmp_path / "reference"
    pack_dataset(HF_SRC, reference, shard_size=1, workers=1, progress=False)
    out = tmp_path / "shards"
    env = dict(os.environ, **{SLOW_ENV: "0.4"})
    proc = subprocess.Popen([sys.executable, "-m", "packer.cli", "--src", HF_SRC, "--out", str(out), "--shard-size",
                             "1", "--workers", "1", "--no-progress"], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list((out / STATE_DIR).glob("*-*.json"))) < 4:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the packer made no progress"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    packed = {p for f in (out / STATE_DIR).glob("*-*.json") for p in json.loads(f.read_text())["consumed"]}
    assert 4 <= len(packed) < 12

    hub.reset()
    summary = pack_dataset(HF_SRC, out, shard_size=1, workers=1, progress=False)
    assert summary.resumed_shards >= 4 and summary.patches == 12
    same_pack(reference, out)
    # Each member is fetched by one range request starting at its local header: none of those of
    # the patches already packed is asked for again (a request may read a few bytes past its own
    # member, into the next one's header: that is the slack for the local extra field).
    starts = {(name, a) for name, spans in _member_spans(toy_zips, packed).items() for a, _ in spans}
    asked = {(r.path.rsplit("/", 1)[-1], int(r.range.split("=")[1].split("-")[0]))
             for r in _zip_requests(hub) if not r.range.startswith("bytes=-")}
    assert starts and not starts & asked
    assert summary.source.members.requests == 10 * (12 - len(packed))


def _content(out):
    """Index rows without their placement in shards, and the decoded members, by patch id."""
    placement = {"shard", "sample_index", "offset", "size", "json_offset", "json_size",
                 *(f"{m}_{k}" for m in schema.MODALITY_NAMES for k in ("offset", "size"))}
    rows = {}
    for row in read_index(out).to_pylist():
        members = read_sample(out, row)
        arrays = {m: decode_array(members[schema.member_name(row["patch_id"], m)]).tobytes() for m in row["modalities"]}
        rows[row["patch_id"]] = ({k: v for k, v in row.items() if k not in placement}, arrays,
                                 members[schema.meta_member_name(row["patch_id"])])
    return rows


@pytest.mark.slow
def test_slurm_and_kubernetes_examples_pack_parts_that_merge_into_a_single_run(toy_zips, tmp_path, fake_hub):
    """The SLURM array script (tasks 0 and 1) and the Kubernetes Indexed Job's command (index 2), run
    as separate processes at the same time against the fake Hub, then `flair-pack merge`."""
    fake_hub(toy_zips.root)
    single = tmp_path / "single"
    pack_dataset(HF_SRC, single, workers=1, progress=False)
    parts, bin_dir = tmp_path / "parts", Path(sys.executable).parent
    env = dict(os.environ, SRC=HF_SRC, OUT=str(parts), FLAIR_PACK=str(bin_dir / "flair-pack"),
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    procs = [subprocess.Popen(["bash", str(REPO / "tools/slurm/flair-pack-array.sbatch")], cwd=tmp_path,
                              env=dict(env, SLURM_ARRAY_TASK_ID=str(k), SLURM_ARRAY_TASK_COUNT="3",
                                       SLURM_CPUS_PER_TASK="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k in (0, 1)]
    job = next(yaml.safe_load_all((REPO / "tools/k8s/flair-pack-indexed-job.yaml").read_text()))
    container = job["spec"]["template"]["spec"]["containers"][0]
    k8s_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert set(k8s_env) == {"SRC", "OUT", "NUM_PARTS", "WORKERS"}
    k8s_env.update(SRC=HF_SRC, OUT=str(parts), NUM_PARTS="3", WORKERS="1")
    procs.append(subprocess.Popen([*container["command"], *container["args"]], cwd=tmp_path,
                                  env=dict(env, **k8s_env, JOB_COMPLETION_INDEX="2"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()
    assert sorted(p.name for p in parts.iterdir()) == ["part-0", "part-1", "part-2"]
    merged = tmp_path / "merged"
    assert main(["merge", "--out", str(merged), *(str(parts / f"part-{k}") for k in range(3))]) == 0
    assert verify_dataset(merged).ok
    assert _content(merged) == _content(single)


def test_hub_errors_survive_pickling():
    """Remote errors raised in workers travel back to the writer process."""
    import pickle

    from packer.ranges import HttpStatusError

    err = pickle.loads(pickle.dumps(HttpStatusError("https://h/x.zip", "HTTP 403 Forbidden", 403)))
    assert (err.path, err.problem, err.status) == ("https://h/x.zip", "HTTP 403 Forbidden", 403)
    assert isinstance(err, PackError)


def test_hub_urls(monkeypatch):
    from packer.hub import HfPath, hub_path_of_https

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    p = HfPath.parse("hf://datasets/IGNF/FLAIR-HUB@refs/pr/7/data")
    assert p == HfPath("IGNF", "FLAIR-HUB", "refs/pr/7", "data")
    assert p.tree_api_url() == \
        "https://huggingface.co/api/datasets/IGNF/FLAIR-HUB/tree/refs%2Fpr%2F7/data?recursive=true&expand=false"
    assert p.revision_api_url("http://m:1/") == "http://m:1/api/datasets/IGNF/FLAIR-HUB/revision/refs%2Fpr%2F7"
    assert p.at("abc").resolve_url(path="data/x.zip") == "https://huggingface.co/datasets/IGNF/FLAIR-HUB/resolve/abc/data/x.zip"
    assert p.at("abc").url() == "hf://datasets/IGNF/FLAIR-HUB@abc/data"
    for page in ("resolve", "tree", "blob"):
        assert hub_path_of_https(f"https://hf.example/prefix/datasets/IGNF/FLAIR-HUB/{page}/main/data/") == \
            ("https://hf.example/prefix", HfPath("IGNF", "FLAIR-HUB", "main", "data"))
    assert hub_path_of_https("https://data.example.org/flair/data/") is None
    with pytest.raises(ValueError, match="hf://datasets"):
        HfPath.parse("hf://models/o/n")
