"""What a running notebook is doing, read from its kernel's output: one line a person can follow.

A notebook's kernel prints tqdm bars to its stderr: the sweep's bar (``vqpaper.sweeps``: one
step per run, unit ``run``, its ETA from the runs trained so far) and, inside it, the bar of the
run in progress (one step per epoch). :class:`KernelOutput` is the file papermill writes the
kernel's output to as it arrives (``stdout_file`` / ``stderr_file``): it reads the bars' text, not
the trainer's internals, keeps a :class:`State`, and passes every other line to the log.
:func:`line` turns a state into the line shown on the terminal and written to the log::

    02_tokens_collapse_synthetic | Tokens collapse | synthetic runs 13/54 | 3-D pretrained h32 seed 1
    VQ fine-tune epoch 7/15 | ETA 0:41 | 1:12 elapsed

:class:`Throttle` decides when a line is worth writing where nobody watches a live bar (a log
file, CI output): at a new section or sweep, when a sweep ends, else at most every few seconds.
"""
from __future__ import annotations

import dataclasses
import re
import time
from typing import Callable, Optional

#: Every tqdm bar's text, as its default format writes it: "desc: 40%|####  | 12/30 [00:05<00:07, 2.4it/s, x=1]"
BAR = re.compile(r"^(?:(?P<desc>.*):\s+)?(?P<pct>\d+)%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s+"
                 r"\[(?P<elapsed>[\d:]+)<(?P<remaining>[\d:?]+)(?:,\s*(?P<rest>[^\]]*))?\]")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: The sweep's bar counts runs (``tqdm(unit="run")`` in vqpaper.sweeps): its rate says "run/s" or "s/run".
SWEEP_UNIT = re.compile(r"(?:run/s|s/run)")


def seconds(clock: str) -> Optional[float]:
    """tqdm's ``12:34`` or ``1:02:03`` in seconds; None for ``?``."""
    try:
        parts = [int(p) for p in clock.split(":")]
    except ValueError:
        return None
    total = 0
    for p in parts:
        total = total * 60 + p
    return float(total)


def clock(s: float) -> str:
    s = int(round(max(s, 0.0)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclasses.dataclass
class Bar:
    desc: str
    n: int
    total: int
    remaining_s: Optional[float]   # tqdm's estimate when the bar was printed
    seen_at: float                 # when it was printed (time.time())


@dataclasses.dataclass
class State:
    """A notebook in progress: its section, the sweep and the run it is on."""

    name: str
    started: float = dataclasses.field(default_factory=time.time)
    section: str = ""
    sweep: Optional[Bar] = None
    run: Optional[Bar] = None

    def eta_s(self, now: Optional[float] = None) -> Optional[float]:
        """The sweep's ETA now: tqdm's estimate at its last print, less the time since."""
        if self.sweep is None or self.sweep.remaining_s is None or self.sweep.n >= self.sweep.total:
            return None
        return max(self.sweep.remaining_s - ((now or time.time()) - self.sweep.seen_at), 0.0)


def line(state: State, now: Optional[float] = None) -> str:
    """One line: notebook | section | sweep i/N | run's epoch e/E | ETA | elapsed."""
    now = now or time.time()
    parts = [state.name]
    if state.section:
        parts.append(state.section if len(state.section) <= 40 else state.section[:39] + "…")
    sweep = state.sweep
    if sweep is not None:
        parts.append(f"{sweep.desc or 'runs'} {sweep.n}/{sweep.total}" +
                     (" done" if sweep.n >= sweep.total else ""))
    if state.run is not None and (sweep is None or sweep.n < sweep.total):
        parts.append(f"{state.run.desc} epoch {state.run.n}/{state.run.total}".strip())
    if sweep is not None and sweep.n < sweep.total:
        eta = state.eta_s(now)
        parts.append(f"ETA {clock(eta)}" if eta is not None else "ETA ? (after the first run)")
    parts.append(f"{clock(now - state.started)} elapsed")
    return " | ".join(parts)


class KernelOutput:
    """The file papermill writes a kernel's stream output to, as it arrives.

    Bars update the :class:`State` (``on_state(state, milestone)`` after each change; a milestone
    is a new section, a new sweep or a finished one); any other complete line goes to ``log``.
    papermill calls ``write`` and ``flush`` only.
    """

    def __init__(self, state: State, log: Callable[[str], None], on_state: Callable[[State, bool], None]):
        self.state, self.log, self.on_state = state, log, on_state
        self.pending = ""

    # papermill's stdout_file / stderr_file protocol
    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for raw in lines:
            visible = self._read(raw.split("\r"))
            if visible:
                self.log(visible)
        if "\r" in self.pending:
            # a bar rewritten in place ("\r" + bar): read the complete ones now, keep the last
            *done, last = self.pending.split("\r")
            self._read(done)
            self.pending = last
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        visible = self._read(self.pending.split("\r"))
        if visible:
            self.log(visible)
        self.pending = ""

    def section(self, title: str) -> None:
        """A cell under another heading started."""
        if title and title != self.state.section:
            self.state.section = title
            if self.state.sweep is not None and self.state.sweep.n >= self.state.sweep.total:
                self.state.sweep = self.state.run = None
            self.on_state(self.state, True)

    def _read(self, fragments) -> str:
        """Read the bars among ``fragments`` (text between carriage returns); returns the text a
        terminal would leave visible that is not a bar (e.g. a warning), else ''."""
        visible = ""
        for fragment in fragments:
            text = ANSI.sub("", fragment).strip()
            m = BAR.match(text)
            if m is not None:
                self._bar(m)
                text = text[m.end():].strip()
            if text:
                visible = text
            elif fragment.strip():
                visible = ""  # a bar overwrote what was there
        return visible

    def _bar(self, m: re.Match) -> None:
        bar = Bar(desc=(m["desc"] or "").strip(), n=int(m["n"]), total=int(m["total"]),
                  remaining_s=seconds(m["remaining"]), seen_at=time.time())
        if SWEEP_UNIT.search(m["rest"] or ""):
            old = self.state.sweep
            milestone = (old is None or (old.desc, old.total) != (bar.desc, bar.total) or bar.n < old.n
                         or bar.n >= bar.total > old.n)
            if old is not None and bar.n != old.n:
                self.state.run = None  # that run ended
            self.state.sweep = bar
            if milestone or (bar.n, bar.remaining_s) != (old.n, old.remaining_s):
                self.on_state(self.state, milestone)
        else:
            old = self.state.run
            self.state.run = bar
            if old is None or (bar.n, bar.total, bar.desc) != (old.n, old.total, old.desc):
                self.on_state(self.state, False)


class Throttle:
    """When to write a line where no live bar is shown: milestones at once, else every ``every_s``."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self.last: dict[str, float] = {}
        self.due: dict[str, bool] = {}

    def __call__(self, name: str, milestone: bool, now: Optional[float] = None) -> bool:
        now = now or time.time()
        if milestone or now - self.last.get(name, float("-inf")) >= self.every_s:
            self.last[name] = now
            self.due[name] = False
            return True
        self.due[name] = True  # a change not yet written: write it at the next chance
        return False

    def overdue(self, name: str, now: Optional[float] = None) -> bool:
        """A change was held back and ``every_s`` has passed since the last line."""
        now = now or time.time()
        return self.due.get(name, False) and now - self.last.get(name, float("-inf")) >= self.every_s
