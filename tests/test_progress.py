"""Progress bars: plain periodic lines in log files, redraws on terminals; whole-run ETA."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from crelu.training.progress import format_duration, progress_bar, run_eta


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_file_gets_whole_lines_and_no_carriage_returns():
    out = io.StringIO()
    with progress_bar(500, desc="epoch 1/3", file=out, interval_s=0) as bar:
        for _ in range(500):
            bar.update(1)
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) > 2 and all(line.startswith("epoch 1/3:") for line in lines)
    assert "500/500" in lines[-1] and all(ord(c) < 128 for c in text)  # ascii bar


def test_log_file_lines_are_rate_limited():
    out = io.StringIO()
    with progress_bar(10_000, desc="x", file=out, interval_s=3600) as bar:
        for _ in range(10_000):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) <= 3 and "10000/10000" in lines[-1]  # the opening line, maybe one more, the closing one


def test_terminal_gets_redraws_and_initial_counts():
    out = _Tty()
    with progress_bar(10, desc="t", file=out, initial=4, unit="img") as bar:
        assert bar.n == 4
        bar.update(6)
    text = out.getvalue()
    assert "\r" in text and "10/10" in text and "img" in text


@pytest.mark.parametrize("stream", [io.StringIO, _Tty])
def test_disabled_bar_prints_nothing(stream):
    out = stream()
    with progress_bar(5, file=out, disable=True) as bar:
        bar.update(3)
    assert out.getvalue() == ""


def test_a_piped_subprocess_writes_no_carriage_returns(tmp_path):
    code = ("from crelu.training.progress import progress_bar\n"
            "with progress_bar(300, desc='steps', interval_s=0) as b:\n"
            "    for _ in range(300): b.update(1)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr and "300/300" in res.stderr.splitlines()[-1]


def test_run_eta():
    eta = run_eta(3, 10, elapsed_s=60.0)
    assert eta.seconds_left == pytest.approx(140.0) and str(eta) == "epoch 3/10, ETA 2m20s"
    resumed = run_eta(7, 10, elapsed_s=20.0, epochs_at_start=5)  # 2 epochs timed here, 10 s each
    assert resumed.seconds_left == pytest.approx(30.0) and resumed.fraction == pytest.approx(0.7)
    assert run_eta(0, 10, 0.0).seconds_left is None and str(run_eta(0, 10, 0.0)) == "epoch 0/10, ETA ?"
    assert run_eta(10, 10, 99.0).seconds_left == 0.0
    with pytest.raises(ValueError):
        run_eta(2, 10, 5.0, epochs_at_start=3)


@pytest.mark.parametrize("s,text", [(0, "0s"), (59.4, "59s"), (65, "1m05s"), (3 * 3600 + 61, "3h01m"),
                                    (50 * 3600, "2d02h"), (float("inf"), "?")])
def test_format_duration(s, text):
    assert format_duration(s) == text


def test_track_iterates_with_a_bar(monkeypatch):
    import crelu.training.progress as progress

    out = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", out)
    assert list(progress.track(range(7), desc="layers", unit="layer")) == list(range(7))
    assert list(progress.track(iter("abc"), desc="gen")) == ["a", "b", "c"]  # no len(): no total
    text = out.getvalue()
    assert "\r" not in text and "7/7" in text and "layers" in text and "3it" in text.replace(" ", "")
    assert list(progress.track([1, 2], disable=True)) == [1, 2]
