"""translate, classify and generate answer each line of stdin as it arrives, one output line per input line
(blank in, blank out), as fairseq-interactive does: the test writes one line to a pipe and reads the answer
before it writes the next."""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

from qkv.cli import main


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    return subprocess.Popen([sys.executable, "-m", "qkv", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _ask(proc: subprocess.Popen, line: str, *, timeout: float = 90.0) -> str:
    """Write one line and wait for one line of answer while stdin stays open."""
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        pytest.fail(f"no answer to {line!r} within {timeout} s; stderr: {proc.stderr.read()}")
    return proc.stdout.readline()


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out, err


def test_translate_answers_each_line_as_it_arrives(dates_run):
    proc = _start("translate", str(dates_run))
    first = _ask(proc, "3 mars 2019")
    assert first.endswith("\n") and first.strip()
    assert _ask(proc, "") == "\n"  # blank in, blank out, at once
    assert _ask(proc, "3 mars 2019") == first  # the same sentence alone gets the same answer
    rest, err = _finish(proc)
    assert rest == "" and "type a sentence" not in err  # no banner: stdin is a pipe


def test_classify_answers_each_line_as_it_arrives(labelled_run):
    proc = _start("classify", str(labelled_run))
    label, text = _ask(proc, "a fine film").rstrip("\n").split("\t")
    assert label in {"0", "1"} and text == "a fine film"
    assert _ask(proc, "") == "\n"
    assert _ask(proc, "  flat and tired ").rstrip("\n").endswith("\tflat and tired")
    _finish(proc)


def test_generate_continues_each_prompt_as_it_arrives(lm_run_dir):
    proc = _start("generate", str(lm_run_dir), "--greedy", "--max-new-tokens", "5")
    first = _ask(proc, "to be")  # the continuation may hold newlines of its own: this is its first line
    assert first.startswith("to be")
    proc.stdin.write("\n")  # a blank prompt: a blank line, nothing generated; then the end of input
    out, _ = _finish(proc)
    assert (first + out).endswith("\n\n") and len(first + out) <= len("to be") + 5 + 2


def test_input_file_keeps_blank_lines_in_place(dates_run, tmp_path, capsys):
    src = tmp_path / "src.txt"
    src.write_text("3 mars 2019\n\nMarch 3rd, 2019\n", encoding="utf-8")
    assert main(["translate", str(dates_run), "--input", str(src), "--output", str(tmp_path / "out.txt")]) == 0
    lines = (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[0] and lines[2] and lines[3] == ""


def test_a_terminal_gets_a_prompt_banner(dates_run):
    import pty

    main_fd, child_fd = pty.openpty()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.Popen([sys.executable, "-m", "qkv", "translate", str(dates_run)], stdin=child_fd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    os.close(child_fd)
    try:
        os.write(main_fd, b"3 mars 2019\n")
        ready, _, _ = select.select([proc.stdout], [], [], 90)
        assert ready and proc.stdout.readline().endswith("\n")
        os.write(main_fd, b"\x04")  # Ctrl-D: end of input
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(main_fd)
    assert proc.returncode == 0, err
    assert "type a sentence and press Enter" in err
