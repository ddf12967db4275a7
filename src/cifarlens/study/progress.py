"""Runs done of all, with the time left."""

from __future__ import annotations

import time

from cifarlens import _console as console


class StudyProgress:
    """Whole-study progress on stderr: runs done of all, and an ETA for the runs left from the
    time measured per run in this invocation (wall time / runs finished, so runs trained side by
    side with --jobs count at their real throughput). Runs finished before a resume count as
    done but not in the timing."""

    def __init__(self, total: int, done: int, say, clock=time.perf_counter) -> None:
        self.total, self.done, self.say, self.clock = total, done, say, clock
        self.t0, self.finished = clock(), 0

    def begin(self) -> None:
        left = self.total - self.done
        if left:
            self.say(f"[{self.done}/{self.total} runs] {left} to train and evaluate; "
                     "time left known after the first")

    def eta_s(self) -> float | None:
        if not self.finished:
            return None
        return (self.clock() - self.t0) / self.finished * (self.total - self.done)

    def run_done(self, name: str, took_s: float) -> str:
        self.done += 1
        self.finished += 1
        left = self.total - self.done
        eta = self.eta_s()
        tail = (f"{left} left, about {console.fmt_duration(eta)} left" if left and eta is not None
                else "all runs done")
        line = f"[{self.done}/{self.total} runs] {name} done in {console.fmt_duration(took_s)}; {tail}"
        self.say(line)
        return line


def fmt_s(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
