"""A stage counts as done only when its record is well formed, its key matches, and every file
it wrote still has the bytes it wrote."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from unisteer.experiment.stages import STAGE_FILE, Stage, file_sha256


def finished(tmp_path: Path, key: dict[str, object] | None = None) -> Stage:
    stage = Stage(tmp_path / "s", key or {"stage": "x", "n": 1})
    stage.start()
    (stage.directory / "table.txt").write_text("numbers\n")
    (stage.directory / "sub").mkdir()
    (stage.directory / "sub" / "more.bin").write_bytes(b"\x00\x01")
    stage.finish(rows=3)
    return stage


def test_a_finished_stage_records_its_files_and_is_done(tmp_path: Path) -> None:
    stage = finished(tmp_path)
    record = json.loads((stage.directory / STAGE_FILE).read_text())
    assert record["files"] == {
        "sub/more.bin": file_sha256(stage.directory / "sub" / "more.bin"),
        "table.txt": file_sha256(stage.directory / "table.txt"),
    }
    assert stage.done() and stage.info()["rows"] == 3
    assert not Stage(stage.directory, {"stage": "x", "n": 2}).done()  # another key


def test_start_empties_the_folder(tmp_path: Path) -> None:
    stage = finished(tmp_path)
    stage.start()
    assert list(stage.directory.iterdir()) == []
    stage.finish()
    assert json.loads((stage.directory / STAGE_FILE).read_text())["files"] == {}


@pytest.mark.parametrize(
    "change",
    ["rewrite", "same_size", "remove", "add_nothing_else"],
)
def test_an_output_changed_after_the_stage_finished_reruns_it(
    tmp_path: Path, change: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process (or a person) rewriting an output under an intact ``stage.json`` is the
    poisoning issue 14 describes: the stage must not be taken as done."""
    stage = finished(tmp_path)
    table = stage.directory / "table.txt"
    if change == "rewrite":
        table.write_text("other numbers\n")
    elif change == "same_size":
        table.write_text("NUMBERS\n")
    elif change == "remove":
        table.unlink()
    else:
        (stage.directory / "extra.txt").write_text("not ours\n")  # unlisted files are ignored
        assert stage.done()
        return
    with caplog.at_level(logging.WARNING):
        assert not stage.done()
    assert "table.txt" in caplog.text and "runs again" in caplog.text
    assert stage.info() == {}


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ("not json", "is not valid JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"digest": 5, "files": {}}', "key 'digest'"),
        ('{"digest": "%(d)s", "files": [], "info": {}}', "key 'files'"),
        ('{"digest": "%(d)s", "files": {"a": "short"}}', "key 'files'"),
        ('{"digest": "%(d)s", "files": {}, "info": []}', "key 'info'"),
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
    ],
)
def test_a_malformed_record_is_named_and_the_stage_reruns(
    tmp_path: Path, record: str, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    stage = finished(tmp_path)
    path = stage.directory / STAGE_FILE
    path.write_text(record % {"d": stage.digest} if "%(d)s" in record else record)
    with caplog.at_level(logging.WARNING):
        assert not stage.done()
    assert str(path) in caplog.text and says in caplog.text


def test_a_record_cannot_point_outside_its_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stage = finished(tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_text("x")
    path = stage.directory / STAGE_FILE
    record = json.loads(path.read_text())
    record["files"] = {"../secret.txt": file_sha256(outside)}
    path.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING):
        assert not stage.done()
    assert "outside the stage folder" in caplog.text


def test_a_huge_record_is_not_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stage = finished(tmp_path)
    (stage.directory / STAGE_FILE).write_text(" " * (2 << 20))
    with caplog.at_level(logging.WARNING):
        assert not stage.done()
    assert "bytes, more than" in caplog.text


def test_the_content_digest_follows_the_bytes_written(tmp_path: Path) -> None:
    """Later stages key on it: the same settings writing other bytes give another digest."""
    stage = finished(tmp_path)
    before = stage.content_digest
    assert Stage(stage.directory, dict(stage.key)).content_digest == before
    stage.start()
    (stage.directory / "table.txt").write_text("other numbers\n")
    stage.finish()
    assert (
        stage.content_digest != before and stage.digest == Stage(stage.directory, stage.key).digest
    )
    stage.start()
    with pytest.raises(RuntimeError, match="not done"):
        _ = stage.content_digest
