"""How `poold pool` and `poold usage` draw the API's answers, from canned answers: figures the
daemon does not have (None) show as "-", MIG slices by profile, device-hours by model."""

from __future__ import annotations

import csv
import io

from poold.cli.pool import mig_text, pool_row
from poold.cli.usage import emit_csv, usage_rows

H100 = {"model": "H100", "kind": "gpu", "devices": 8, "in_service": 7, "free": 5, "allocated": 2.142857, "memory_total_mib": 655360,
        "memory_allocated_mib": 92160, "mig": {"2g.20gb": {"total": 1, "free": 0}, "1g.10gb": {"total": 2, "free": 1}},
        "price_per_hour": 4.0, "fragmentation": 0.25, "utilization_pct": 61.6}
L4 = {**H100, "model": "L4", "devices": 2, "in_service": 2, "free": 2, "allocated": 0.0, "memory_total_mib": 46068, "memory_allocated_mib": 0,
      "mig": {}, "price_per_hour": 0.8, "fragmentation": None, "utilization_pct": None}


def test_pool_rows():
    # 2 whole H100s and a 1g slice (1/7): 2.142857 -> "2.14"; 90 GiB of 640 held; a quarter of the free capacity stranded
    assert pool_row(H100) == ["H100", "gpu", 8, 7, 5, "2.14", "90/640 GiB", "1g.10gb 1/2, 2g.20gb 0/1", "25%", "62%", "4.00"]
    assert pool_row(L4)[5:] == ["0", "0/45 GiB", None, None, None, "0.80"]  # drawn as "-"
    assert mig_text({}) is None


USAGE = {"by": "job", "since": None, "rows": [
    {"key": "7", "jobs": 1, "job_id": 7, "name": "train", "owner": "alice", "queue": "default", "state": "running", "held_hours": 1.5,
     "device_hours": {"H100": 3.0, "L4": 0.25}, "cost": 12.2, "price_per_hour": 8.0, "utilization_pct": None, "samples": 0}]}


def test_usage_rows_by_job_and_by_queue():
    columns, rows = usage_rows(USAGE)
    assert columns[0] == "JOB" and rows == [[7, "train", "alice", "default", "running", "1.5", "H100=3 L4=0.25", "12.20", "8.00", None]]
    queue = {"by": "queue", "since": None, "rows": [{"key": "default", "jobs": 3, "device_hours": {}, "cost": 0.0, "utilization_pct": 4.4,
                                                     "samples": 2}]}
    assert usage_rows(queue) == (["QUEUE", "JOBS", "DEVICE-HOURS", "COST", "UTIL"], [["default", 3, None, "0.00", "4%"]])


def test_usage_csv_has_a_column_per_model(capsys):
    emit_csv(USAGE)
    [line] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert line == {"job_id": "7", "name": "train", "owner": "alice", "queue": "default", "state": "running", "held_hours": "1.5",
                    "price_per_hour": "8.0", "samples": "0", "device_hours_H100": "3.0", "device_hours_L4": "0.25", "cost": "12.2",
                    "utilization_pct": ""}
