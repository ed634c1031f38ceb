"""Where a builder's CSV files come from: a local folder, or the Hugging Face hub.

    --source path/to/folder            # holds train.csv and test.csv
    --source hub                       # the published repo of the task (below)
    --source hub:owner/name            # another dataset repo with the same layout

Hub files are downloaded once into `.trm/cache/sources/<owner>/<name>/` (atomically: a partial
download never looks complete). The hub address is `HF_ENDPOINT` when set (mirrors, tests on
loopback), else https://huggingface.co. Machines without network use a folder instead, e.g.
the output of `python -m datasets.generate`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

HUB_REPOS = {"sudoku": "sapientinc/sudoku-extreme", "maze": "sapientinc/maze-30x30-hard-1k"}
DEFAULT_ENDPOINT = "https://huggingface.co"
SOURCE_CACHE = Path(".trm") / "cache" / "sources"
FILES = ("train.csv", "test.csv")


def resolve_source(task: str, source: str, cache_dir: Path | None = None) -> Path:
    """A local folder holding FILES for `task`, downloading from the hub when asked."""
    if source != "hub" and not source.startswith("hub:"):
        return Path(source)
    repo = source.partition(":")[2] or HUB_REPOS.get(task)
    if not repo:
        raise ValueError(f"no hub repository is known for task {task!r}; known: {HUB_REPOS}")
    endpoint = os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    target = (cache_dir or SOURCE_CACHE).resolve() / repo
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        path = target / name
        if path.exists():
            continue
        url = f"{endpoint}/datasets/{repo}/resolve/main/{name}"
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, out, length=1 << 22)
            os.replace(tmp, path)
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            raise FileNotFoundError(
                f"could not download {url} ({err}); without network, give a folder holding "
                f"{' and '.join(FILES)} (e.g. from `python -m datasets.generate {task}`) as the "
                f"source: `--source DIR` to datasets.build, `scale.data.{task}.source=DIR` to "
                "orchestration.ablate"
            ) from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target
