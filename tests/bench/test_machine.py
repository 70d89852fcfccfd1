"""The machine-busy figures the scale and import benches print beside their rates (bench/machine.py): a rate
next to "the machine was N % busy" says whether more parallelism could have helped, so the arithmetic must hold."""

from __future__ import annotations

import os
import time

from bench import machine
from bench.record_bench import _machine_text


def test_busy_share_and_cpu_seconds_come_from_the_jiffies_between_two_readings() -> None:
    assert machine.busy_pct((50, 100), (150, 300)) == 50.0
    assert machine.busy_pct((0, 0), (200, 200)) == 100.0
    assert machine.cpu_seconds((0, 0), (os.sysconf("SC_CLK_TCK") * 3, 0)) == 3.0


def test_a_busy_loop_shows_as_busy_time_on_this_machine() -> None:
    a = machine.cpu_times()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    b = machine.cpu_times()
    assert machine.cpu_seconds(a, b) >= 0.25  # at least this process's own 0.3 s (jiffy rounding aside)
    assert 0 < machine.busy_pct(a, b) <= 100


def test_the_import_report_states_the_bound_the_cpu_cost_implies() -> None:
    text = _machine_text({"import_machine": {"busy_pct": 97.0, "cpu_us_per_line": 400.0, "cores": 2}})
    assert "97.0 % busy" in text and "400.0 µs of CPU a line" in text and "at most 5,000 lines/s" in text
    assert _machine_text({}) == ""


def test_the_split_names_who_used_the_cpu_and_a_busy_postgres_backend_counts_as_postgres() -> None:
    import psycopg

    url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    with psycopg.connect(url) as conn:  # a real PostgreSQL backend doing 0.3 s+ of work
        a, ja = machine.process_cpu(), machine.cpu_times()
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
        b, jb = machine.process_cpu(), machine.cpu_times()
    assert b["postgres"] - a["postgres"] >= 0.1
    split = machine.process_split(a, b, machine.cpu_seconds(ja, jb))
    assert set(split) == {"self", "children", "postgres", "other"}
    assert split["postgres"] > split["self"]
    text = _machine_text({"import_machine": {"busy_pct": 90.0, "cpu_us_per_line": 500.0, "cores": 2,
                                             "split_pct": {"job": 40.0, "validation_workers": 30.0,
                                                           "postgres": 25.0, "other": 5.0}}})
    assert "the job's process 40.0 %" in text and "PostgreSQL 25.0 %" in text


def test_a_server_trees_cpu_counts_its_workers_and_a_finished_load_generator_counts_as_such() -> None:
    """A uvicorn master does little itself: its workers are what the scale bench's "server" figure must hold."""
    import subprocess
    import sys

    burn = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
    # The root starts its worker only when told (a line on stdin), after the first sample: with a fixed sleep
    # instead, a loaded machine could let part of the worker's 0.4 s run before it (CI on 1246cf2 failed so).
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\nsys.stdin.readline()\n"
                               f"subprocess.run([sys.executable, '-c', {burn!r}])\ntime.sleep(30)"],
                              stdin=subprocess.PIPE)
    try:
        assert parent.stdin is not None
        a, ja = machine.roles_cpu({"app": parent.pid}), machine.cpu_times()
        parent.stdin.write(b"go\n")
        parent.stdin.flush()
        deadline = time.monotonic() + 10
        while machine.roles_cpu({"app": parent.pid})["app"] - a["app"] < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        b = machine.roles_cpu({"app": parent.pid})  # the worker (a child of the root) is still running or just done
        assert b["app"] - a["app"] >= 0.3, (a, b)
        subprocess.run([sys.executable, "-c", burn], check=True)  # a load generator run to its end by this process
        c, jc = machine.roles_cpu({"app": parent.pid}), machine.cpu_times()
        assert c["load_generator"] - b["load_generator"] >= 0.3
        busy = machine.cpu_seconds(ja, jc)
        split = machine.process_split(a, c, busy)
        assert set(split) == {"app", "postgres", "redis", "load_generator", "other"}
        # Each role's share is its own seconds over the machine's busy seconds (at least 0.3 s each of them):
        # not a fixed floor such as "> 10 %", which another job on the machine pushes under (CI on 1246cf2).
        for role, used in (("app", c["app"] - a["app"]), ("load_generator", c["load_generator"] - a["load_generator"])):
            assert used >= 0.3 and split[role] == round(100 * used / busy, 1) > 0, (role, used, busy, split)
    finally:
        parent.kill()
        parent.wait()
