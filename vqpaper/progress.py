"""What a running notebook is doing, read from its kernel's output: one line a person can follow.

A notebook's kernel prints tqdm bars to its stderr: the sweep's bar (``vqpaper.sweeps``: one
step per run, unit ``run``, its ETA from the runs trained so far) and, inside it, the bar of the
run in progress (one step per epoch). :class:`KernelOutput` is the file papermill writes the
kernel's output to as it arrives (``stdout_file`` / ``stderr_file``): it reads the bars' text, not
the trainer's internals, keeps a :class:`State`, and passes every other line to the log.
:func:`line` turns a state into the line shown on the terminal and written to the log::

    02_tokens_collapse_synthetic | synthetic runs: run 13/54 | ETA 0:41 | 3-D pretrained h32 seed 1 VQ fine-tune
    epoch 7/15 | Train both recipes | 1:12 elapsed

:class:`Throttle` decides when a line is worth writing where nobody watches a live bar (a log
file, CI output): at a new section or sweep, at the first ETA, when a sweep ends, else at most
every few seconds. :class:`Display` shows the lines of the notebooks running at once: a tqdm
line each on a terminal, throttled lines elsewhere.
"""
from __future__ import annotations

import dataclasses
import re
import threading
import time
from typing import Any, Callable, Optional

from tqdm import tqdm

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
        return max(self.sweep.remaining_s - ((time.time() if now is None else now) - self.sweep.seen_at), 0.0)


def line(state: State, now: Optional[float] = None) -> str:
    """One line: notebook | sweep's run i/N | ETA | the run's epoch e/E | section | elapsed.

    What matters most comes first: a terminal narrower than the line cuts its end.
    """
    now = time.time() if now is None else now
    parts = [state.name]
    sweep = state.sweep
    running = sweep is not None and sweep.n < sweep.total
    if sweep is not None:
        parts.append(f"{sweep.desc + ': ' if sweep.desc else ''}run {sweep.n}/{sweep.total}"
                     + ("" if running else " done"))
    if running:
        eta = state.eta_s(now)
        parts.append(f"ETA {clock(eta)}" if eta is not None else "ETA ? (after the first run)")
    if state.run is not None and (sweep is None or running):
        parts.append(f"{state.run.desc} epoch {state.run.n}/{state.run.total}".strip())
    if state.section:
        parts.append(state.section if len(state.section) <= 40 else state.section[:39] + "…")
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
                         or bar.n >= bar.total > old.n                                 # finished
                         or (old.remaining_s is None and bar.remaining_s is not None))  # the first ETA
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
        now = time.time() if now is None else now
        if milestone or now - self.last.get(name, float("-inf")) >= self.every_s:
            self.last[name] = now
            self.due[name] = False
            return True
        self.due[name] = True  # a change not yet written: write it at the next chance
        return False

    def overdue(self, name: str, now: Optional[float] = None) -> bool:
        """A change was held back and ``every_s`` has passed since the last line."""
        now = time.time() if now is None else now
        return self.due.get(name, False) and now - self.last.get(name, float("-inf")) >= self.every_s


class Display:
    """The terminal: one tqdm line per running notebook on a tty; elsewhere a line now and then."""

    def __init__(self, out, live: bool, every_s: float):
        self.out, self.live, self.throttle = out, live, Throttle(every_s)
        self.states: dict[str, State] = {}
        self.bars: dict[str, Any] = {}
        self.positions: dict[str, int] = {}
        self.lock = threading.Lock()

    def update(self, state: State, milestone: bool) -> None:
        with self.lock:
            self.states[state.name] = state
            if self.live:
                self._bar(state.name)
            elif self.throttle(state.name, milestone):
                print(line(state), file=self.out, flush=True)

    def tick(self) -> None:
        """Once a second: live bars count down their ETA; elsewhere a held-back change is written."""
        with self.lock:
            for name, state in self.states.items():
                if self.live:
                    self._bar(name)
                elif self.throttle.overdue(name):
                    self.throttle(name, True)
                    print(line(state), file=self.out, flush=True)

    def done(self, name: str, ok: bool, wall_time_s: float, error: str = "") -> None:
        """The notebook ended: its line goes, an ``ok``/``FAIL`` line stays."""
        text = f"  {'ok  ' if ok else 'FAIL'}  {name:<36} {wall_time_s:8.1f} s"
        if error:
            text += "\n        " + error.replace("\n", "\n        ")
        with self.lock:
            self.states.pop(name, None)
            bar = self.bars.pop(name, None)
            self.positions.pop(name, None)
            if bar is not None:
                bar.close()
            if self.live:
                tqdm.write(text, file=self.out)
            else:
                print(text, file=self.out, flush=True)

    def close(self) -> None:
        with self.lock:
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()

    def _bar(self, name: str) -> None:
        bar = self.bars.get(name)
        if bar is None:
            used = set(self.positions.values())
            position = self.positions[name] = next(i for i in range(len(used) + 1) if i not in used)
            bar = self.bars[name] = tqdm(total=0, position=position, bar_format="{desc}", leave=False,
                                         file=self.out, dynamic_ncols=True)
        bar.set_description_str(line(self.states[name]), refresh=True)
