"""The results file of a study: one JSON line per finished cell (task, estimator, seed, budget).

Lines are appended as cells finish, so an interrupted study keeps what it had; a later line for the same
cell replaces an earlier one when the file is read.
"""

import json
import os

KEY_FIELDS = ("task", "estimator", "seed", "steps")


def cell_key(record):
    """The identity of a cell: `(task, estimator, seed, steps)`."""
    return tuple(record[field] for field in KEY_FIELDS)


def read(path):
    """The records of a results file, keyed by `cell_key` (the last line per cell wins; none if absent)."""
    records = {}
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # a line cut short by an interrupted write: that cell is simply not done
                print(f"{path}:{number}: skipping a line that is not JSON")
                continue
            records[cell_key(record)] = record
    return records


def append(path, record):
    """Appends one record as a JSON line and flushes it to disk."""
    missing = [field for field in KEY_FIELDS if field not in record]
    if missing:
        raise ValueError(f"A result record needs the fields {KEY_FIELDS}. Received a record without {missing}")
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def missing_steps(records, task, estimator, seed, steps):
    """The budgets in `steps` that `records` do not yet hold for (task, estimator, seed), ascending."""
    return sorted(s for s in steps if (task, estimator, seed, s) not in records)


def emit(text, output=None):
    """Prints a diagnostic's Markdown `text` and, with `output` (a path), also writes it there."""
    print(text)
    if output:
        with open(output, "w") as f:
            f.write(text)
