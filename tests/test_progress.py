"""vqpaper.progress: a kernel's tqdm output read into one line a person can follow."""
import io
import random
import re

from tqdm import tqdm

from vqpaper import progress


def kernel_stderr(runs=3, epochs=4, cached=1, warning_at=(1, 2)):
    """What a kernel's stderr receives from a sweep (vqpaper.sweeps' bar) around per-run epoch bars."""
    out = io.StringIO()
    sweep = tqdm(total=runs + cached, initial=cached, desc="synthetic runs", unit="run", smoothing=0, file=out,
                 mininterval=0)
    for r in range(runs):
        for e in tqdm(range(epochs), desc=f"2-D scratch h32 seed {r} VQ-VAE", leave=False, file=out, mininterval=0):
            if (r, e) == warning_at:
                out.write("/x/y.py:3: UserWarning: something odd\n")
        sweep.update(1)
    sweep.close()
    return out.getvalue()


def read(text, chunk=None):
    """Feed ``text`` to a KernelOutput in chunks as ipykernel sends them; returns (lines, logged, states)."""
    state = progress.State("02_x")
    logged, states = [], []
    out = progress.KernelOutput(state, logged.append,
                                lambda s, milestone: states.append((milestone, progress.line(s))))
    out.section("Train both recipes")
    rng = random.Random(0)
    i = 0
    while i < len(text):
        n = chunk or rng.randint(1, 60)
        out.write(text[i:i + n])
        i += n
    out.close()
    return state, logged, states


def test_bars_become_the_run_the_epoch_and_an_eta_whatever_the_chunks():
    text = kernel_stderr()
    assert "\r" in text and "\x1b[A" in text  # nested bars, as tqdm writes them off a terminal
    for chunk in (None, 1, 7, len(text)):
        state, logged, states = read(text, chunk)
        lines = [line for _, line in states]
        assert all(line.startswith("02_x | ") and " | Train both recipes | " in line for line in lines[1:])
        assert any(re.match(r"02_x \| synthetic runs: run 2/4 \| ETA 0:\d\d \| 2-D scratch h32 seed 1 VQ-VAE epoch 3/4 "
                            r"\| Train both recipes \| 0:00 elapsed$", line) for line in lines), lines
        assert lines[-1].startswith("02_x | synthetic runs: run 4/4 done | Train both recipes | ")
        assert logged == ["/x/y.py:3: UserWarning: something odd"], logged  # other text goes to the log
        assert not any("\x1b" in line or "\r" in line for line in lines + logged)


def test_milestones_are_the_section_the_sweep_the_first_eta_and_the_end():
    _, _, states = read(kernel_stderr())
    milestones = [line for milestone, line in states if milestone]
    assert len(milestones) == 4, milestones
    assert "ETA" not in milestones[0]  # the section, before any sweep
    assert "run 1/4 | ETA ? (after the first run)" in milestones[1]  # one run was read from the cache
    assert "run 2/4 | ETA 0:" in milestones[2]  # the first run trained here gives the first ETA
    assert "run 4/4 done" in milestones[3]


def test_eta_counts_down_between_prints():
    state = progress.State("n", started=100.0)
    state.sweep = progress.Bar("runs", 2, 10, remaining_s=80.0, seen_at=100.0)
    assert progress.line(state, now=100.0) == "n | runs: run 2/10 | ETA 1:20 | 0:00 elapsed"
    assert progress.line(state, now=130.0).endswith("ETA 0:50 | 0:30 elapsed")
    assert "ETA 0:00" in progress.line(state, now=500.0)
    assert progress.clock(3725) == "1:02:05" and progress.seconds("1:02:05") == 3725 and progress.seconds("?") is None


def test_throttle_lets_milestones_through_and_the_rest_every_few_seconds():
    throttle = progress.Throttle(every_s=10)
    assert throttle("a", False, now=0.0)
    assert not throttle("a", False, now=5.0) and throttle.due["a"]
    assert not throttle.overdue("a", now=9.0) and throttle.overdue("a", now=10.0)
    assert throttle("a", True, now=6.0)  # a milestone at once
    assert throttle("b", False, now=6.5)  # per notebook
    assert throttle("a", False, now=16.0)


def test_display_off_a_terminal_prints_lines_then_the_outcome():
    out = io.StringIO()
    display = progress.Display(out, live=False, every_s=60)
    state = progress.State("01_x", started=0.0)
    display.update(state, True)
    state.section = "Fig. 2"
    display.update(state, False)  # held back: less than 60 s since the last line
    display.done("01_x", False, 12.5, "notebook 01_x failed\n  ValueError: no")
    printed = out.getvalue().splitlines()
    assert printed[0].startswith("01_x | ") and len(printed) == 4, printed
    assert printed[1].startswith("  FAIL  01_x") and printed[1].endswith("12.5 s")
    assert printed[2:] == ["        notebook 01_x failed", "          ValueError: no"]


def test_display_on_a_terminal_keeps_one_tqdm_line_per_notebook():
    out = io.StringIO()
    display = progress.Display(out, live=True, every_s=60)
    for name in ("01_x", "02_y"):
        display.update(progress.State(name), True)
    assert set(display.positions.values()) == {0, 1}
    display.done("01_x", True, 3.0)
    display.update(progress.State("03_z"), True)
    assert display.positions["03_z"] == 0, "a finished notebook's line is reused"
    display.close()
    assert "ok    01_x" in out.getvalue()
