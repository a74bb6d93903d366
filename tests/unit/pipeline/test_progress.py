"""pipeline.progress: a tqdm bar on a terminal, a plain line every ~5 % otherwise, TQDM_DISABLE honoured."""

from __future__ import annotations

import io

from tqdm import tqdm

from pipeline.progress import LineProgress, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_prints_a_line_every_five_percent(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    out = io.StringIO()
    bar = progress_bar(200, "train [x]", file=out)
    assert isinstance(bar, LineProgress)
    for i in range(200):
        if i == 100:
            bar.set_postfix({"seg": "0.500"}, sp="0.900")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 20  # 5 %, 10 %, ..., 100 %; close adds nothing after 100 %
    assert lines[0] == "train [x]: 10/200 (5%)"
    assert lines[-1] == "train [x]: 200/200 (100%) seg=0.500, sp=0.900"


def test_resumed_run_counts_from_initial_and_close_reports_the_end(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    out = io.StringIO()
    bar = progress_bar(100, "train", initial=50, file=out)
    bar.update(3)  # 53 %: still in the 50 % bucket, no line
    assert out.getvalue() == ""
    bar.close()
    bar.close()
    assert out.getvalue().splitlines() == ["train: 53/100 (53%)"]


def test_tqdm_disable_silences_the_line_logger(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = io.StringIO()
    bar = progress_bar(10, "train", file=out)
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    bar = progress_bar(10, "train", file=_Tty())
    try:
        assert isinstance(bar, tqdm)
    finally:
        bar.close()
