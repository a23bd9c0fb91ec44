"""Progress and summaries: the live table keeps rows under their component, GitHub Actions folds and
annotations, NO_COLOR and FORCE_COLOR."""

from __future__ import annotations

import pytest

from archlift import ui


def test_rows_stay_under_their_component_whatever_order_events_come_in() -> None:
    live = ui.LiveReporter([("hello", ["linux/amd64", "linux/arm64"]), ("toolbox", ["linux/amd64"])])
    live("toolbox", "linux/amd64", "COPY toolbox.sh")
    live("hello", "linux/arm64", "build 2/3 RUN go build")  # a cross-compiling step of hello
    live("hello", "", "pushing sha256:0123 by digest")
    live("toolbox", "linux/arm64", "late, unexpected platform")
    assert live.rows() == [
        ("hello", "", "pushing sha256:0123 by digest"),
        ("hello", "linux/amd64", ""),
        ("hello", "linux/arm64", "build 2/3 RUN go build"),
        ("toolbox", "", "waiting"),
        ("toolbox", "linux/amd64", "COPY toolbox.sh"),
        ("toolbox", "linux/arm64", "late, unexpected platform"),
    ]


def test_github_actions_folds_and_annotations(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    with ui.group("build: bake"):
        ui.annotate_error("hello failed: a, b", "100% broken\nsecond line")
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "::group::build: bake",
        "::error title=hello failed%3A a%2C b::100%25 broken%0Asecond line",
        "::endgroup::",
    ]


def test_outside_github_actions_nothing_is_printed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    with ui.group("x"):
        ui.annotate_error("t", "m")
    assert capsys.readouterr().err == ""


def test_no_color_and_force_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    assert ui.console().no_color is True
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert ui.console().is_terminal is True and ui.console().no_color is False
    assert ui.interactive() is True  # forced, although the tests' stderr is not a terminal
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.setenv("CI", "1")
    assert ui.interactive() is False
