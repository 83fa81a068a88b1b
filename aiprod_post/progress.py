"""Progress of a render for people (a line on stderr, redrawn on a terminal) and for
machines (one JSON event per line): stages, items, movement inside an item, a heartbeat while
nothing else moves, stage times and peak memory for the report."""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

__all__ = ["Reporter", "Watched"]


def _peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class Reporter:
    """Progress for people (stderr) or machines (one JSON event per line on stdout)."""

    def __init__(self, quiet: bool = False, log_json: bool = False) -> None:
        self.quiet, self.log_json = quiet, log_json
        self.t0 = time.monotonic()
        self._stage: str | None = None
        self._stage_t0 = 0.0
        self.timings: dict[str, float] = {}
        #: the process's peak resident memory at the end of each stage
        self.peak_rss_mib: dict[str, float] = {}
        self.done: dict[str, int] = {}
        self.cached: dict[str, int] = {}
        self._tty = sys.stderr.isatty()
        #: a terminal is redrawn at most this often; a log (CI, a service) gets a line at
        #: most every LOG_EVERY seconds, and --log-json a progress event at most every second
        self._last_line = 0.0
        self._last_event = 0.0
        self._progress: tuple[int, int] = (0, 0)
        #: where events go (None: stdout as it is when each is printed)
        self.events: Any = None
        #: a heartbeat thread per stage says the stage is alive when nothing else has for
        #: HEARTBEAT seconds (a model loading, a long filter pass): its clock moves
        self._lock = threading.RLock()
        self._activity = time.monotonic()
        self._item = ""
        self._line = ""
        self._beat_stop: threading.Event | None = None
        self._beat: threading.Thread | None = None

    HEARTBEAT = 1.0

    REDRAW_EVERY = 0.25
    LOG_EVERY = 5.0

    def _may_print(self, final: bool = False) -> bool:
        now = time.monotonic()
        if final or now - self._last_line >= (self.REDRAW_EVERY if self._tty
                                              else self.LOG_EVERY):
            self._last_line = now
            return True
        return False

    def progress(self, item: str, done: int, total: int, unit: str = "frames") -> None:
        """Movement inside an item (frames of a master or of a long shot): rate and time
        left, so no stage sits still for more than a second."""
        stage = self._stage or "?"
        now = time.monotonic()
        if self._progress[1] != total or done < self._progress[0]:
            self._progress_t0 = now  # a new item: its own clock
        self._progress = (done, total)
        elapsed = now - getattr(self, "_progress_t0", now)
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else None
        if self.log_json:
            if now - self._last_event >= 1.0 or done == total:
                self._last_event = now
                self._emit("progress", stage=stage, item=item, done=done, total=total,
                           unit=unit, rate=round(rate, 2),
                           eta=round(left, 1) if left is not None else None)
            return
        if self.quiet or not self._may_print(final=done == total and not self._tty):
            return
        line = (f"\r{stage:>10} {item:<10} {done}/{total} {unit}, {rate:5.1f} {unit}/s, "
                + (f"~{left:5.1f}s left" if left is not None else "starting"))
        self._write(line, item)

    def _write(self, line: str, item: str | None = None) -> None:
        """A progress line on stderr: redrawn in place on a terminal, a line in a log."""
        with self._lock:
            self._activity = time.monotonic()
            if item is not None:
                self._item, self._line = item, line.rstrip()
            sys.stderr.write(line if self._tty else line.lstrip("\r") + "\n")
            sys.stderr.flush()

    def _emit(self, event: str, **fields: Any) -> None:
        if self.log_json:
            with self._lock:
                self._activity = time.monotonic()
                if "item" in fields:
                    self._item = str(fields["item"])
                print(json.dumps({"event": event, "t": round(time.monotonic() - self.t0, 3),
                                  **fields}), file=self.events or sys.stdout, flush=True)

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(0.25):
            with self._lock:
                now = time.monotonic()
                quiet_for = now - self._activity
                if self._stage is None or quiet_for < self.HEARTBEAT:
                    continue
                elapsed = now - self._stage_t0
                if self.log_json:
                    self._emit("heartbeat", stage=self._stage, item=self._item,
                               elapsed=round(elapsed, 1))
                elif self._tty:
                    base = self._line or f"\r{self._stage:>10}"
                    sys.stderr.write(f"{base}  [{elapsed:5.0f}s in {self._stage}]")
                    sys.stderr.flush()
                    self._activity = now
                elif quiet_for >= self.LOG_EVERY:
                    self._write(f"{self._stage:>10} still working"
                                + (f" on {self._item}" if self._item else "")
                                + f", {elapsed:.0f}s in")

    def stage(self, name: str, total: int = 0) -> None:
        self.end_stage()
        self._stage, self._stage_t0 = name, time.monotonic()
        self._item, self._line, self._activity = "", "", time.monotonic()
        self.done.setdefault(name, 0)
        self.cached.setdefault(name, 0)
        self._emit("stage_start", stage=name, total=total)
        if not self.quiet or self.log_json:
            self._beat_stop = threading.Event()
            self._beat = threading.Thread(target=self._heartbeat, args=(self._beat_stop,),
                                          name="aiprod-progress", daemon=True)
            self._beat.start()

    def item(self, name: str, index: int, total: int, cached: bool, **fields: Any) -> None:
        stage = self._stage or "?"
        (self.cached if cached else self.done)[stage] = \
            (self.cached if cached else self.done).get(stage, 0) + 1
        self._emit("item", stage=stage, item=name, index=index, total=total, cached=cached,
                   **fields)
        if self.quiet or self.log_json or not self._may_print(final=index == total):
            return
        elapsed = time.monotonic() - self._stage_t0
        eta = elapsed / max(index, 1) * (total - index) if index else 0.0
        width = 24
        filled = int(width * index / max(total, 1))
        line = (f"\r{stage:>10} [{'#' * filled}{'.' * (width - filled)}] {index}/{total} "
                f"{name:<10} {elapsed:6.1f}s elapsed, ~{eta:5.1f}s left"
                + (" (cached)" if cached else ""))
        self._write(line, name)

    def note(self, message: str, **fields: Any) -> None:
        self._emit("note", message=message, **fields)
        if not self.quiet and not self.log_json:
            sys.stderr.write(("\n" if self._tty else "") + message + "\n")

    def stop_heartbeat(self) -> None:
        if self._beat_stop is not None:
            self._beat_stop.set()
            self._beat.join()  # type: ignore[union-attr]
            self._beat_stop = self._beat = None

    def end_stage(self) -> None:
        self.stop_heartbeat()
        if self._stage is None:
            return
        seconds = time.monotonic() - self._stage_t0
        self.timings[self._stage] = round(self.timings.get(self._stage, 0.0) + seconds, 3)
        self.peak_rss_mib[self._stage] = _peak_rss_mib()
        self._emit("stage_end", stage=self._stage, seconds=round(seconds, 3),
                   done=self.done.get(self._stage, 0), cached=self.cached.get(self._stage, 0))
        if not self.quiet and not self.log_json:
            if self._tty:
                sys.stderr.write("\n")
            sys.stderr.write(f"{self._stage:>10} done in {seconds:.1f}s "
                             f"({self.done.get(self._stage, 0)} made, "
                             f"{self.cached.get(self._stage, 0)} cached)\n")
        self._stage = None




class Watched:
    """An audio source or sink that reports how far it has been read or written, in
    seconds of audio, so the mix stage moves on the progress line (a normaliser reads
    its source more than once: each pass counts up again)."""

    def __init__(self, inner, frames: int, item: str, reporter: Reporter) -> None:
        self.inner, self.total, self.item, self.r = inner, frames, item, reporter
        self.written = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def read(self, lo: int, hi: int):
        self.r.progress(self.item, hi // 48000, self.total // 48000, "s of audio")
        return self.inner.read(lo, hi)

    def write(self, block) -> None:
        self.inner.write(block)
        self.written += len(block)
        self.r.progress(self.item, self.written // 48000, self.total // 48000, "s of audio")
