"""Crash-safe appending to samples.jsonl: whole prompts at a time, repaired on restart (plumbing).

`maxk eval` appends the N samples of one prompt with a single write followed by flush + fsync. A SIGKILL
can therefore leave at most one torn group at the end of the file: a final line without its newline
and/or a prompt with fewer than N samples. `load_completed` reads the file back, keeps only the complete
prompts (every sample_index 0..N-1 present once, task ids matching the task list) and, when it dropped
anything, rewrites the file atomically (temporary file, fsync, rename). Sampling is a function of
(seed, prompt index), so re-sampling the dropped prompt reproduces it exactly.

run.json next to the samples holds the settings of the run; a rerun with different settings in the same
directory is refused (the samples would mix two experiments).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from maxk.evaluation.schema import SamplesFormatError, validate_record


def check_or_write_settings(out_dir: Path, settings: dict) -> None:
    """Write run.json on the first run; on a rerun, refuse if any setting differs."""
    path = out_dir / "run.json"
    settings = json.loads(json.dumps(settings))  # normalise tuples -> lists, as stored
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = [
            f"{k}: was {old.get(k)!r}, now {settings.get(k)!r}"
            for k in sorted(set(old) | set(settings))
            if old.get(k) != settings.get(k)
        ]
        if diff:
            raise ValueError(
                f"{out_dir} already holds a run with other settings ({'; '.join(diff)}); "
                "rerun with the same arguments to resume, or choose a new --out directory"
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(settings, indent=1, sort_keys=True) + "\n")


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_completed(path: Path, task_ids: list[str], n: int) -> dict[int, list[dict]]:
    """Complete prompt groups already in `path`: {prompt_index: n records in sample order}.

    Drops a torn tail (a last line without newline, an incomplete last group) and rewrites the file when
    it did. A malformed line that is not at the tail, or a record that does not belong to this task list,
    is an error (the file was edited or belongs to another run).
    """
    if not path.exists():
        return {}
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else a torn line
    groups: dict[int, list[dict]] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = validate_record(json.loads(line), where)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SamplesFormatError(f"{where}: not valid JSON; the file was edited by hand?") from None
        p = rec.get("prompt_index")
        if p is None or not 0 <= p < len(task_ids) or rec["task_id"] != task_ids[p]:
            raise SamplesFormatError(
                f"{where}: sample of task {rec['task_id']!r} (prompt_index {p}) is not in this task list"
            )
        groups.setdefault(p, []).append(rec)
    complete = {}
    for p, recs in groups.items():
        recs = sorted(recs, key=lambda r: r.get("sample_index", -1))
        if [r.get("sample_index") for r in recs] == list(range(n)):
            complete[p] = recs
    if tail.strip() or len(complete) != len(groups):
        kept = "".join(json.dumps(r) + "\n" for p in sorted(complete) for r in complete[p])
        atomic_write(path, kept)
    return complete


def append_group(path: Path, records: list[dict]) -> None:
    """Append one prompt's records in one write, then flush and fsync."""
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())
