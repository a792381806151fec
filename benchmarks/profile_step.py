"""`python -m benchmarks.profile_step`: where one MixVI step's time goes, by XLA operation and source line.

Builds the scale bench's compiled loop (``benchmarks.scale``: a target, d, N, a metric), runs it under
``jax.profiler.trace`` and reads the trace's XSpace file itself (a few lines of protobuf wire format, so no
TensorBoard plugin is needed): every executed XLA thunk's time is summed by operation, mapped to the HLO
instruction of the compiled program and, through its stack frame, to the mixvi source line that made it.
Prints the operations by share of the executed time, then the same summed by source line, with thunks
per step (on a small model a step is mostly dispatches: their count matters as much as their size).

Times are the sum over the CPU's worker threads of each thunk's duration, under the profiler's own
overhead: read shares and counts, and time steps with ``benchmarks.scale``. A developer's tool: it
writes JSON only when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import re
import sys
import tempfile
from typing import Any

import jax

from benchmarks import scale
from mixvi.loop import blas_limit


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes):
    """(field number, value) of a protobuf message: ints for varints, bytes for the rest."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def event_times(xspace: bytes) -> tuple[collections.Counter, collections.Counter]:
    """Summed duration (ps) and count of every event name on every line of an XSpace
    (XSpace.planes = 1; XPlane.lines = 3, .event_metadata = 4; XLine.name = 2, .events = 4; XEvent.metadata_id
    = 1, .duration_ps = 3; XEventMetadata.id = 1, .name = 2)."""
    durations, counts = collections.Counter(), collections.Counter()
    for number, plane in _fields(xspace):
        if number != 1:
            continue
        names, lines = {}, []
        for field, value in _fields(plane):
            if field == 3:
                lines.append(value)
            elif field == 4:
                entry = dict(_fields(value))
                meta = dict(_fields(entry.get(2, b"")))
                names[meta.get(1, entry.get(1))] = meta.get(2, b"").decode(errors="replace")
        for line in lines:
            for field, event in _fields(line):
                if field != 4:
                    continue
                values = dict(_fields(event))
                name = names.get(values.get(1, 0), "")
                if name:
                    durations[name] += values.get(3, 0)
                    counts[name] += 1
    return durations, counts


def source_lines(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> 'file:line(function)' of the innermost mixvi frame that made it (of the
    innermost frame when none is mixvi's: the model's own operations)."""
    sections: dict[str, list[str]] = collections.defaultdict(list)
    current = None
    for line in hlo_text.splitlines():
        stripped = line.strip()
        if stripped in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = stripped
        elif current and not stripped:
            current = None
        elif current:
            sections[current].append(stripped)
    quoted = re.compile(r'(\d+) "(.*)"')
    files = {int(m[1]): m[2] for m in map(quoted.match, sections["FileNames"]) if m}
    functions = {int(m[1]): m[2] for m in map(quoted.match, sections["FunctionNames"]) if m}
    location = re.compile(r"(\d+) \{file_name_id=(\d+) function_name_id=(\d+) line=(\d+)")
    locations = {
        int(m[1]): (int(m[2]), int(m[3]), int(m[4])) for m in map(location.match, sections["FileLocations"]) if m
    }
    frame = re.compile(r"(\d+) \{file_location_id=(\d+) parent_frame_id=(\d+)")
    frames = {int(m[1]): (int(m[2]), int(m[3])) for m in map(frame.match, sections["StackFrames"]) if m}

    def where(frame_id: int) -> str:
        innermost = "?"
        for _ in range(64):  # innermost first, up the parents
            if frame_id not in frames:
                break
            loc, parent = frames[frame_id]
            file_id, function_id, line = locations[loc]
            path = files.get(file_id, "")
            here = f"{path.rsplit('/', 1)[-1]}:{line}({functions.get(function_id, '?')})"
            if "/mixvi/" in path:
                return here
            innermost = here if innermost == "?" else innermost
            frame_id = parent
        return innermost  # the model's own operations: no mixvi frame

    out = {}
    for m in re.finditer(r"%([\w.\-]+) = [^\n]*?stack_frame_id=(\d+)", hlo_text):
        out[m[1]] = where(int(m[2]))
    return out


def profile(target: str, d: int, n: int, metric: str, steps: int, runs: int) -> dict[str, Any]:
    """Trace ``runs`` executions of the scale bench's ``steps``-step MixVI loop and attribute its thunks."""
    mixvi_loop, args, _, _ = scale._loops(target, d, n, jax.random.PRNGKey(0), metric)
    compiled = jax.jit(mixvi_loop, static_argnums=1).lower(args[0], steps, *args[1:]).compile()
    with blas_limit(scale.BLAS_THREADS), tempfile.TemporaryDirectory() as tmp:
        jax.block_until_ready(compiled(args[0], *args[1:]))
        with jax.profiler.trace(tmp):
            for _ in range(runs):
                jax.block_until_ready(compiled(args[0], *args[1:]))
        paths = sorted(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True))
        if not paths:
            raise RuntimeError("jax.profiler.trace wrote no .xplane.pb file")
        with open(paths[-1], "rb") as f:
            durations, counts = event_times(f.read())
    hlo = compiled.as_text()
    where = source_lines(hlo)
    # the thunks are the events named after the program's instructions (the rest: Python and runtime spans)
    instructions = set(re.findall(r"%([\w.\-]+) = ", hlo))
    durations = collections.Counter({k: v for k, v in durations.items() if k in instructions})
    total_steps = steps * runs
    ops = [
        {
            "op": name,
            "source": where.get(name, "?"),
            "us_per_step": ps / 1e6 / total_steps,
            "thunks_per_step": counts[name] / total_steps,
        }
        for name, ps in durations.items()
    ]
    ops.sort(key=lambda o: -o["us_per_step"])
    by_source: dict[str, dict[str, float]] = collections.defaultdict(
        lambda: {"us_per_step": 0.0, "thunks_per_step": 0.0}
    )
    for o in ops:
        by_source[o["source"]]["us_per_step"] += o["us_per_step"]
        by_source[o["source"]]["thunks_per_step"] += o["thunks_per_step"]
    sources = sorted(({"source": k, **v} for k, v in by_source.items()), key=lambda s: -s["us_per_step"])
    return {"target": target, "d": d, "N": n, "metric": metric, "steps": total_steps, "ops": ops, "sources": sources}


def format_report(report: dict[str, Any], top: int) -> str:
    total = sum(o["us_per_step"] for o in report["ops"]) or 1.0
    thunks = sum(o["thunks_per_step"] for o in report["ops"])
    lines = [
        f"{report['target']} d={report['d']} N={report['N']} metric={report['metric']}: {total:.1f} us of thunks "
        f"and {thunks:.0f} thunks per step (summed over threads, under the profiler)",
        "",
        "share   us/step  thunks/step  operation                         source",
    ]
    for o in report["ops"][:top]:
        lines.append(
            f"{100 * o['us_per_step'] / total:5.1f}% {o['us_per_step']:8.1f} {o['thunks_per_step']:11.1f}  "
            f"{o['op'][:32]:32s}  {o['source']}"
        )
    lines += ["", "share   us/step  thunks/step  source"]
    for s in report["sources"][:top]:
        lines.append(
            f"{100 * s['us_per_step'] / total:5.1f}% {s['us_per_step']:8.1f} {s['thunks_per_step']:11.1f}  {s['source']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.profile_step``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="logistic", choices=("logistic", "mixture"))
    p.add_argument("--d", type=lambda s: int(float(s)), default=1000)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--metric", default="isotropic", choices=("isotropic", "diagonal", "dense", "lowrank"))
    p.add_argument("--steps", type=int, default=50, help="steps per compiled loop")
    p.add_argument("--runs", type=int, default=3, help="loops traced")
    p.add_argument("--top", type=int, default=30, help="rows of each table")
    p.add_argument("--out", default="", help="JSON output ('' (default): print only)")
    a = p.parse_args(argv)
    report = profile(a.target, a.d, a.components, a.metric, a.steps, a.runs)
    print(format_report(report, a.top))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
