"""The whole machine's CPU between two moments (/proc/stat), for benches whose figures are bound by two cores
shared between the load generator, the servers and PostgreSQL: a figure beside "how busy the machine was" says
whether more parallelism could have helped."""

from __future__ import annotations

import os


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat (idle and iowait count as not busy)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def busy_pct(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How much of every core was busy between two ``cpu_times`` readings: 100 means no idle core was left."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return round(100 * busy / total, 1) if total else float("nan")


def cpu_seconds(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Busy CPU seconds of the whole machine (every core, every process) between two ``cpu_times`` readings."""
    return (after[0] - before[0]) / os.sysconf("SC_CLK_TCK")


def process_cpu() -> dict[str, float]:
    """CPU seconds so far of this process, of its reaped children (a finished worker pool) and of every PostgreSQL
    process on the machine (a backend that ended meanwhile counts under the postmaster): taken before and after a
    run, ``process_split`` says who used the machine's CPU."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    pg = sum(c for _, comm, c in processes().values() if comm.startswith("postgres"))
    return {"self": me.ru_utime + me.ru_stime, "children": kids.ru_utime + kids.ru_stime, "postgres": pg}


def process_split(before: dict[str, float], after: dict[str, float], machine_seconds: float) -> dict[str, float]:
    """Shares (%) of the machine's busy CPU between two ``process_cpu`` readings; "other" is everything else
    (the kernel's own threads, anything else running)."""
    used = {k: after[k] - before[k] for k in before}
    out = {k: round(100 * v / machine_seconds, 1) if machine_seconds else float("nan") for k, v in used.items()}
    out["other"] = round(100 - sum(out.values()), 1)
    return out


def processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds so far) of every process on the machine (/proc), its reaped
    children's included (a worker that exited between two readings still counts under its parent)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, str, float]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        out[int(pid)] = (int(rest[1]), comm, sum(int(x) for x in rest[11:15]) / tick)  # utime stime cutime cstime
    return out


def roles_cpu(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far by role: each of ``roots`` (name -> pid) with every process below it (a uvicorn master
    and its workers), PostgreSQL, Redis, and this process's reaped children (a load generator run to its end,
    e.g. wrk). Taken before and after a run, ``process_split`` says who used the machine's CPU."""
    import resource

    procs = processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)

    def tree(pid: int) -> float:
        return procs.get(pid, (0, "", 0.0))[2] + sum(tree(c) for c in children.get(pid, ()))

    out = {name: tree(pid) for name, pid in roots.items()}
    out["postgres"] = sum(c for _, comm, c in procs.values() if comm.startswith("postgres"))
    out["redis"] = sum(c for _, comm, c in procs.values() if comm.startswith("redis"))
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["load_generator"] = kids.ru_utime + kids.ru_stime
    return out

