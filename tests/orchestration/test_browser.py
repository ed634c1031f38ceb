"""What a scientist sees, in a real browser: a real smoke suite through `ablate`, its HTML
report opened in headless Chromium (table with every arm, plots embedded and decoded, a
screenshot kept under .trm/test-artifacts/), then a real MLflow server over the same runs
with its web UI in headless Chromium: the experiment's runs and each child run's page with its
arm tag. Every process started here is ended here, by its process group."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.orchestration.test_ablate import SMOKE, ablate, runs

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / ".trm" / "test-artifacts"
# Added to a copy of the report: once the page has loaded, record how each <img> decoded.
PROBE = (
    "<script>addEventListener('load', () => { document.body.dataset.imageWidths = "
    "Array.from(document.images, i => i.naturalWidth).join(','); });</script>"
)

needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)",
)


class Page(HTMLParser):
    """The text of a DOM (scripts and styles left out), its table cells, images and the
    <body> attributes."""

    def __init__(self, dom: str):
        super().__init__()
        self.words, self.cells, self.images, self.body = [], [], [], {}
        self._skip, self._cell = 0, None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs))
        elif tag == "body":
            self.body = dict(attrs)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag in ("td", "th") and self._cell is not None:
            self.cells.append(" ".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._skip or not data.strip():
            return
        self.words.append(data.strip())
        if self._cell is not None:
            self._cell.append(data.strip())

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.words).split())


def chromium(*args: str, timeout: float = 120) -> str:
    """Headless Chromium in its own process group, which is ended whatever happens."""
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = browser.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):  # helpers (renderer, zygote) linger
            os.killpg(browser.pid, signal.SIGKILL)
        browser.wait()
    assert browser.returncode == 0, err[-2000:]
    return out


def screenshot(url: str, name: str, size: str, *args: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    chromium(f"--screenshot={path}", f"--window-size={size}", *args, url)
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 10_000
    print(f"screenshot: {path}")
    return path


def ui_page(url: str) -> Page:
    """An MLflow UI page after its React app has fetched and rendered the runs."""
    return Page(chromium("--virtual-time-budget=15000", "--dump-dom", url, timeout=180))


@pytest.mark.slow
@needs_chromium
def test_smoke_report_in_chromium_and_its_runs_in_the_mlflow_ui(tmp_path):
    from orchestration.stack import local_stack

    result = ablate(tmp_path, *SMOKE)
    assert result.returncode == 0, result.stderr[-3000:]
    db = tmp_path / ".trm" / "mlflow.db"
    client, children, parents = runs(f"sqlite:///{db}")
    parent = parents[0].info.run_id
    arms = {r.info.run_name: r.data.tags["trm.arm"] for r in children}
    assert sorted(arms) == ["one_step_grad/seed0", "one_step_grad/seed1", "trm/seed0", "trm/seed1"]

    made = subprocess.run(
        [sys.executable, "-m", "orchestration.report", "suite=smoke"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    assert f"Parent run: {parent}" in made.stdout
    report = tmp_path / ".trm" / "reports" / parent / "table.html"
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    page = Page(chromium("--dump-dom", probe.as_uri()))
    # every arm's row (a run's label may add what its scale changed, e.g. "[scale: ...]")
    for label in ("TRM (T=2, n=2)", "w/ 1-step gradient"):
        assert any(cell.startswith(label) for cell in page.cells), (label, page.cells)
    assert "Δ baseline" in page.cells and "token acc" in page.cells
    assert len(page.images) == 2
    assert all(i["src"].startswith("data:image/png;base64,") for i in page.images)
    widths = page.body.get("data-image-widths", "").split(",")
    assert len(widths) == 2 and all(int(w) > 500 for w in widths), widths  # decoded plots
    assert "Produced by:" in page.text and "git commit" in page.text
    screenshot(report.as_uri(), "report.png", "1500,2300")

    stack_dir = tmp_path / "stack"
    stack_dir.mkdir()
    shutil.copy(db, stack_dir / "mlflow.db")  # the stack's server reads <dir>/mlflow.db
    with local_stack(stack_dir) as stack:
        base = stack.tracking_uri
        experiment = client.get_experiment_by_name("trm-lab/smoke").experiment_id
        search = quote("tags.`trm.arm` LIKE '%'")
        listing = ui_page(f"{base}/#/experiments/{experiment}/runs?searchFilter={search}").text
        assert parents[0].info.run_name in listing  # children are nested under their parent
        assert f"{len(children) + 1} matching runs" in listing
        for run in children:
            shown = ui_page(f"{base}/#/experiments/{experiment}/runs/{run.info.run_id}").text
            assert run.info.run_name in shown
            assert f"trm.arm : {arms[run.info.run_name]}" in shown
            assert f"Parent run {parents[0].info.run_name}" in shown
        screenshot(
            f"{base}/#/experiments/{experiment}/runs/{children[0].info.run_id}",
            "mlflow_run.png",
            "1500,1800",
            "--virtual-time-budget=15000",
        )
