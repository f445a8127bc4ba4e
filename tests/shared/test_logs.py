"""Structured logs carry the run and job they are about, as text or JSON."""

from __future__ import annotations

import json
import logging

import pytest

from shared import logs


def test_json_lines_carry_run_and_job_ids(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(json_lines=True)
    try:
        with logs.context(run="r1", job="j1"):
            logging.getLogger("berth.test").info("placed on %s", "node-a")
        logging.getLogger("berth.test").info("outside")
    finally:
        logs.configure(json_lines=False)
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    assert lines[0]["run_id"] == "r1" and lines[0]["job_id"] == "j1"
    assert lines[0]["message"] == "placed on node-a"
    assert lines[1]["run_id"] == "-"


def test_text_lines_name_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(json_lines=False)
    with logs.context(run="r2"):
        logging.getLogger("berth.test").warning("slow")
    assert "run=r2 job=-: slow" in capsys.readouterr().err
