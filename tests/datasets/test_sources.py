"""Hub sources: CSVs are downloaded from the hub address (`HF_ENDPOINT`; here a real HTTP
server on 127.0.0.1 laid out like the hub) into a cache, atomically; a failed download is a
clear error that leaves no partial file and points to the offline alternative."""

import functools
import http.server
import threading

import pytest

from datasets.build import build
from datasets.sources import resolve_source
from tests.datasets.test_sudoku_dataset import _write_source


@pytest.fixture
def hub(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    repo = root / "datasets" / "sapientinc" / "sudoku-extreme" / "resolve" / "main"
    _write_source(repo)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.chdir(tmp_path)  # the source cache lives under ./.trm
    yield repo
    server.shutdown()


def test_hub_source_downloads_once_and_builds(hub, tmp_path):
    folder = resolve_source("sudoku", "hub")
    assert (folder / "train.csv").read_bytes() == (hub / "train.csv").read_bytes()
    ident = build(
        "sudoku",
        tmp_path / "store",
        quiet=True,
        source="hub",
        subsample=5,
        augment=2,
        seed=0,
        test_limit=None,
    )
    local = build(
        "sudoku",
        tmp_path / "store",
        quiet=True,
        source=str(hub),
        subsample=5,
        augment=2,
        seed=0,
        test_limit=None,
    )
    assert ident == local  # same files, same dataset, wherever they came from


def test_failed_download_is_explained_and_leaves_nothing(hub, tmp_path):
    hint = r"could not download .*give a folder.*scale.data.sudoku.source=DIR"
    with pytest.raises(FileNotFoundError, match=hint):
        resolve_source("sudoku", "hub:someone/missing")
    assert list((tmp_path / ".trm" / "cache" / "sources").rglob("*")) == [
        tmp_path / ".trm/cache/sources/someone",
        tmp_path / ".trm/cache/sources/someone/missing",
    ]
