"""The learner's progress: which lessons are done, with what score. One small JSON file,
`$XDG_STATE_HOME/svctrace/learn.json` (default `~/.local/state/svctrace/learn.json`). Stdlib only.

A missing, unreadable or damaged file is an empty progress (and is replaced on the next save); a file that
cannot be written is reported once and the lesson goes on.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FILE = "learn.json"
VERSION = 1


def default_dir() -> Path:
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "svctrace"


@dataclass
class LessonRecord:
    done: bool = False  # finished once (stays done)
    best: int = 0  # best score of a finished run
    total: int = 0  # questions in the lesson
    last_score: int = 0  # the last run, finished or not
    last_answered: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "best": self.best, "total": self.total, "last_score": self.last_score,
                "last_answered": self.last_answered}

    @staticmethod
    def from_json(d: Any) -> LessonRecord:
        if not isinstance(d, dict):
            return LessonRecord()

        def num(k: str) -> int:
            v = d.get(k)
            return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10_000 else 0

        return LessonRecord(d.get("done") is True, num("best"), num("total"), num("last_score"), num("last_answered"))


@dataclass
class DrillRecord:
    """One failure class's drills: how many were tried, solved (right cause and a working fix), and the best
    time of a solved timed drill (seconds; 0: none)."""

    tried: int = 0
    solved: int = 0
    best_seconds: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"tried": self.tried, "solved": self.solved, "best_seconds": self.best_seconds}

    @staticmethod
    def from_json(d: Any) -> DrillRecord:
        if not isinstance(d, dict):
            return DrillRecord()

        def num(k: str) -> int:
            v = d.get(k)
            return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10_000_000 else 0

        return DrillRecord(num("tried"), num("solved"), num("best_seconds"))


@dataclass
class Progress:
    path: Path
    lessons: dict[str, LessonRecord] = field(default_factory=dict)
    drills: dict[str, DrillRecord] = field(default_factory=dict)
    # The drill in progress: {"seed": int, "class": str, "dir": str, "started": float, "limit": int (0: untimed)}
    current: dict[str, Any] | None = None
    problem: str | None = None  # why the file could not be read or written, once

    @staticmethod
    def load(state_dir: Path | None = None) -> Progress:
        path = (state_dir if state_dir is not None else default_dir()) / FILE
        p = Progress(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return p
        except (OSError, UnicodeDecodeError, ValueError) as e:
            p.problem = f"could not read {path} ({type(e).__name__}); starting afresh"
            return p
        lessons = doc.get("lessons") if isinstance(doc, dict) else None
        if isinstance(lessons, dict):
            p.lessons = {str(k): LessonRecord.from_json(v) for k, v in lessons.items()}
        drills = doc.get("drills") if isinstance(doc, dict) else None
        if isinstance(drills, dict):
            p.drills = {str(k): DrillRecord.from_json(v) for k, v in drills.items()}
        cur = doc.get("current_drill") if isinstance(doc, dict) else None
        if (isinstance(cur, dict) and isinstance(cur.get("seed"), int) and isinstance(cur.get("class"), str)
                and isinstance(cur.get("started"), (int, float)) and isinstance(cur.get("limit", 0), int)):
            p.current = {"seed": cur["seed"], "class": cur["class"], "dir": str(cur.get("dir") or ""),
                         "started": float(cur["started"]), "limit": int(cur.get("limit", 0))}
        return p

    def record(self, lesson: str) -> LessonRecord:
        return self.lessons.setdefault(lesson, LessonRecord())

    def answered(self, lesson: str, score: int, answered: int, total: int) -> None:
        r = self.record(lesson)
        r.last_score, r.last_answered, r.total = score, answered, total

    def finished(self, lesson: str, score: int, total: int) -> None:
        r = self.record(lesson)
        r.done = True
        r.best = max(r.best, score)
        r.total, r.last_score, r.last_answered = total, score, total

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": VERSION,
                               "lessons": {k: v.to_json() for k, v in sorted(self.lessons.items())}}
        if self.drills:
            doc["drills"] = {k: v.to_json() for k, v in sorted(self.drills.items())}
        if self.current is not None:
            doc["current_drill"] = self.current
        return doc

    def save(self) -> bool:
        """Write atomically; False (and `problem` set) when the file cannot be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".learn-", suffix=".json", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(self.to_json(), f, indent=2)
                    f.write("\n")
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            self.problem = f"could not save progress to {self.path} ({e.strerror or type(e).__name__})"
            return False
        return True

    def reset(self) -> bool:
        self.lessons.clear()
        self.drills.clear()
        self.current = None
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:
            self.problem = f"could not remove {self.path} ({e.strerror or type(e).__name__})"
            return False
        return True
