"""The main job end to end (``unisteer run --quick`` on the real default model), and its
report rendered in headless Chromium: every image loads and the table has a row per method."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unisteer.experiment import builtin_experiment
from unisteer.experiment.config import quick_methods

CHECK = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((im) => !(im.complete && im.naturalWidth > 0)).map((im) => im.alt);
  const rows = Array.from(document.querySelectorAll("#methods tbody tr"))
    .map((tr) => tr.dataset.method);
  const out = document.createElement("pre");
  out.id = "unisteer-check";
  out.textContent = JSON.stringify({images: images.length, broken: broken, rows: rows});
  document.body.appendChild(out);
});
</script>
"""


def render(html: Path) -> dict[str, object]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium (see README)")
    checked = html.with_name("report-check.html")
    checked.write_text(html.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"))
    profile = html.parent / "chromium-profile"
    out = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    start = out.stdout.find('<pre id="unisteer-check">')
    assert start >= 0, "the check script did not run:\n" + out.stdout[-2000:]
    body = out.stdout[start:].split(">", 1)[1].split("</pre>", 1)[0]
    return dict(json.loads(body.replace("&quot;", '"').replace("&amp;", "&")))


@pytest.mark.slow
def test_quick_main_job_and_its_report_in_a_browser(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "unisteer.cli",
            "run",
            "--quick",
            "--no-progress",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "wall time" in done.stdout and "peak memory" in done.stdout
    results = json.loads((out / "results.json").read_text())
    names = [m["name"] for m in results["methods"]]
    # --quick: every kind and objective once (the default's 10 methods give 6)
    assert names == [m.name for m in quick_methods(builtin_experiment("default").methods)]
    assert len(names) == 6 and "left out: lora-reps, lora-split" in done.stdout
    kinds = {(m["kind"], m["objective"]) for m in results["methods"]}
    assert {k for k, _ in kinds} == {"vector", "lora", "local_weight"}
    assert {o for _, o in kinds} == {"diffmean", "sft", "reps", "split"}
    seen = render(out / "report.html")
    assert seen["rows"] == names
    assert seen["broken"] == []
    assert seen["images"] == 1 + 2 * sum(m["fit"]["ok"] for m in results["methods"])
