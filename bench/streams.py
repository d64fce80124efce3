"""Stream benchmarks (issue 10): relay CPU, added latency, a burst of streams, many held streams.

Runs on 127.0.0.1: the paced stand-in (bench/standin.py) and the service under a real gunicorn
with the shipped gunicorn.conf.py, both as child processes; the load client in this process.

| figure                                          | goal                                  |
| CPU per relayed event, 100 streams, every 10 ms | <= 5x the floor measured in this run  |
| CPU per relayed event, 20 streams, every 5 ms   | the same                              |
| 300 concurrent 10-second streams                | first token p95 <= 1 s                |
| 1,000 concurrent slow streams                   | 0 errors, <= 300 MB RSS, p95 <= 1 s   |
| first-token latency added over the upstream's   | <= 5 ms p50 at 1 stream               |

Relay figures are the median of three runs: one run moves with whatever else the machine runs.
Before them, the busiest relay run goes through bench/bare_relay.py, a WSGI app with no service
code under the same gunicorn config: what the server alone costs per event, for reference.
The floor is one json.loads of a state-sync frame plus one json.dumps of a chunk. CPU is the
user+system time of the gunicorn master and all its children, from /proc; memory is the sum of
their VmRSS, sampled.

    python bench/streams.py [--protocol web|legacy|both] [--quick] [--only relay,hold]
        [--worker gthread|gevent] [--commit REV] [--workers N]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import (
    ROOT,
    ServiceConfig,
    ServiceProcess,
    StandInProcess,
    TreeSampler,
    cpu_seconds,
    raise_fd_limit,
)
from loadclient import StreamResult, Target, describe, error_counts, percentile, run_streams

FLOOR_FACTOR_GOAL = 5.0
FIRST_TOKEN_GOAL = 1.0  # seconds, p95
ADDED_LATENCY_GOAL = 0.005  # seconds, p50
HOLD_RSS_GOAL_MB = 300.0
FLOOR_ROUNDS, FLOOR_REPEATS = 20_000, 5
PROBLEM_LINES_SHOWN = 3
TEXT_BLOCK = {"id": "b2", "text": {"content": "word "}}
STATE_SYNC_FRAME = json.dumps(
    {"op": "append", "mask": "block.text.content", "block": TEXT_BLOCK}, separators=(",", ":")
)
TYPICAL_CHUNK = {
    "id": "2f1c6a53-58f4-4b35-9a4c-0e8e5f1b9d2a",
    "object": "chat.completion.chunk",
    "created": 1767225600,
    "model": "kimi",
    "choices": [
        {"index": 0, "delta": {"content": "word "}, "logprobs": None, "finish_reason": None}
    ],
}


@dataclass(frozen=True)
class RelayRun:
    """Streams at once, each with ``events`` text pieces one every ``interval_ms``."""

    streams: int
    interval_ms: int
    events: int
    has_goal: bool


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is."""

    relay: tuple[RelayRun, ...]
    relay_repeats: int
    latency_streams: int
    burst_streams: int
    burst_seconds: int
    hold_streams: int
    hold_seconds: int
    grace: float  # seconds a stream may take beyond its paced length before it counts as failed


FULL = Sizes(
    relay=(RelayRun(1, 10, 500, False), RelayRun(20, 5, 1000, True), RelayRun(100, 10, 500, True)),
    relay_repeats=3,
    latency_streams=50,
    burst_streams=300,
    burst_seconds=10,
    hold_streams=1000,
    hold_seconds=25,
    grace=60.0,
)
QUICK = Sizes(
    relay=(RelayRun(1, 10, 100, False), RelayRun(20, 5, 200, True), RelayRun(100, 10, 100, True)),
    relay_repeats=1,
    latency_streams=10,
    burst_streams=100,
    burst_seconds=3,
    hold_streams=200,
    hold_seconds=5,
    grace=15.0,
)
BURST_INTERVAL_MS = 100
LATENCY_EVENTS, LATENCY_INTERVAL_MS = 5, 10
HOLD_INTERVAL_MS = 1000


@dataclass
class Bench:
    """One protocol's running processes, the sizes, and the verdicts so far."""

    standin: StandInProcess
    service: ServiceProcess
    sizes: Sizes
    floor_us: float
    verdicts: list[tuple[str, bool]]

    @property
    def target(self) -> Target:
        return Target.from_url(self.service.url)

    def streams(self, count: int, interval_ms: int, events: int) -> list[StreamResult]:
        timeout = events * interval_ms / 1000 + self.sizes.grace
        prompt = f"events={events} interval={interval_ms}"
        return asyncio.run(run_streams(self.target, [prompt] * count, timeout))

    def judge(self, name: str, ok: bool, detail: str) -> None:
        self.verdicts.append((name, ok))
        print(f"  {'PASS' if ok else 'FAIL'}: {detail}")

    def report_problems(self) -> None:
        problems = self.service.new_problems()
        if problems:
            print(f"  service log: {sum(problems.values())} problem lines, most common:")
            for line, count in problems.most_common(PROBLEM_LINES_SHOWN):
                print(f"    {count:>5} x {line[:150]}")

    def report_calls(self, turns: int) -> None:
        calls = self.standin.record()["calls"]
        per_turn = ", ".join(f"{route} {n / turns:.2f}" for route, n in sorted(calls.items()))
        print(f"  upstream calls per stream: {per_turn}")


def measure_floor() -> float:
    """Microseconds for one json.loads of a state-sync frame and one json.dumps of a chunk."""
    timings = []
    for _ in range(FLOOR_REPEATS):
        start = time.process_time()
        for _ in range(FLOOR_ROUNDS):
            json.loads(STATE_SYNC_FRAME)
            json.dumps(TYPICAL_CHUNK)
        timings.append((time.process_time() - start) / FLOOR_ROUNDS * 1e6)
    return statistics.median(timings)


def relay(bench: Bench) -> None:
    """CPU of the service per content event relayed, next to the floor; the median of
    ``sizes.relay_repeats`` runs, since one run moves with the machine's other load."""
    print(f"relay cost (floor {bench.floor_us:.2f} us/event, goal <= {FLOOR_FACTOR_GOAL:g}x):")
    for run in bench.sizes.relay:
        figures = [relay_once(bench, run) for _ in range(bench.sizes.relay_repeats)]
        per_event = statistics.median(figure for figure, _ in figures)
        errors = sum(errors for _, errors in figures)
        label = f"{run.streams} streams, an event every {run.interval_ms} ms"
        runs = " / ".join(f"{figure:.1f}" for figure, _ in figures)
        print(f"  {label}: median {per_event:.1f} us/event of {len(figures)} runs ({runs})")
        if run.has_goal:
            ok = per_event <= FLOOR_FACTOR_GOAL * bench.floor_us and not errors
            bench.judge(label, ok, f"{per_event / bench.floor_us:.1f}x floor, {label}")
    bench.report_problems()


def stack_floor(sizes: Sizes, floor_us: float) -> None:
    """The busiest relay run through bench/bare_relay.py: gunicorn and gevent with no service
    code, one read and one write per event. Printed for reference; no goal."""
    run = max(sizes.relay, key=lambda r: r.streams)
    config = ServiceConfig("web", ROOT, app="bare_relay:app")
    with StandInProcess() as standin, tempfile.TemporaryDirectory() as state_dir:
        with ServiceProcess(config, standin.url, state_dir) as service:
            print(f"== the stack alone (bench/bare_relay.py, worker {service.worker_class()}):")
            bench = Bench(standin, service, sizes, floor_us, [])
            figures = [relay_once(bench, run)[0] for _ in range(sizes.relay_repeats)]
    per_event = statistics.median(figures)
    print(
        f"  {run.streams} streams, an event every {run.interval_ms} ms: median {per_event:.1f} "
        f"us/event = {per_event / floor_us:.1f}x floor, with no service code"
    )


def relay_once(bench: Bench, run: RelayRun) -> tuple[float, int]:
    """One run: microseconds of service CPU per relayed event, and the streams that failed."""
    bench.standin.reset()
    own, standin = time.process_time(), cpu_seconds(bench.standin.process.pid)
    before = cpu_seconds(bench.service.pid)
    results = bench.streams(run.streams, run.interval_ms, run.events)
    used = cpu_seconds(bench.service.pid) - before
    relayed = sum(r.chunks for r in results)
    errors = sum(error_counts(results).values())
    per_event = used / max(relayed, 1) * 1e6
    wall = max(r.ended for r in results) - min(r.started for r in results)
    print(
        f"    {per_event:.1f} us/event = {per_event / bench.floor_us:.1f}x floor "
        f"({used:.2f} s CPU / {relayed} events; {relayed / wall:.0f} events/s, paced "
        f"{run.streams * 1000 / run.interval_ms:.0f}/s; errors {errors}; "
        f"CPU of stand-in {cpu_seconds(bench.standin.process.pid) - standin:.2f} s, "
        f"client {time.process_time() - own:.2f} s)"
    )
    return per_event, errors


def latency(bench: Bench) -> None:
    """First-token latency the service adds: its first chunk after the stand-in's first piece."""
    count = bench.sizes.latency_streams
    print(f"first-token latency added, {count} streams one after another:")
    before = cpu_seconds(bench.service.pid)
    results = [bench.streams(1, LATENCY_INTERVAL_MS, LATENCY_EVENTS)[0] for _ in range(count)]
    per_turn = (cpu_seconds(bench.service.pid) - before) / count
    sent = bench.standin.record()["first_text_at"]
    added = [r.first_content - sent[r.tag] for r in results if r.first_content and r.tag in sent]
    p50, p95 = percentile(added, 0.5), percentile(added, 0.95)
    first = [r.first_token_seconds for r in results]
    print(f"  added p50 {p50 * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms ({len(added)} matched)")
    print(f"  whole first token (request to chunk) p50 {percentile(first, 0.5) * 1000:.2f} ms")
    print(f"  service CPU per turn of {LATENCY_EVENTS} events: {per_turn * 1000:.1f} ms")
    ok = len(added) == count and p50 <= ADDED_LATENCY_GOAL
    bench.judge("added latency", ok, f"p50 {p50 * 1000:.2f} ms, goal <= 5 ms")
    bench.report_problems()


def burst(bench: Bench) -> None:
    """Streams that all start at once: how long the last ones wait for their first token."""
    sizes = bench.sizes
    events = sizes.burst_seconds * 1000 // BURST_INTERVAL_MS
    print(f"{sizes.burst_streams} concurrent {sizes.burst_seconds}-second streams:")
    bench.standin.reset()
    results = bench.streams(sizes.burst_streams, BURST_INTERVAL_MS, events)
    print("\n".join(f"  {line}" for line in describe(results)))
    bench.report_calls(sizes.burst_streams)
    p95 = percentile([r.first_token_seconds for r in results], 0.95)
    bench.judge("burst", p95 <= FIRST_TOKEN_GOAL, f"first token p95 {p95:.2f} s, goal <= 1 s")
    bench.report_problems()


def hold(bench: Bench) -> None:
    """Many slow streams held open at once: errors, resident memory, first token."""
    sizes = bench.sizes
    print(f"{sizes.hold_streams} held streams, one event a second for {sizes.hold_seconds} s:")
    bench.standin.reset()
    with TreeSampler(bench.service.pid) as sampler:
        results = bench.streams(sizes.hold_streams, HOLD_INTERVAL_MS, sizes.hold_seconds)
    print("\n".join(f"  {line}" for line in describe(results)))
    print(f"  peak RSS of the tree {sampler.peak_rss_mb:.0f} MB, {sampler.peak_threads} threads")
    bench.report_calls(sizes.hold_streams)
    errors = sum(error_counts(results).values())
    p95 = percentile([r.first_token_seconds for r in results], 0.95)
    ok = errors == 0 and sampler.peak_rss_mb <= HOLD_RSS_GOAL_MB and p95 <= FIRST_TOKEN_GOAL
    detail = f"{errors} errors, {sampler.peak_rss_mb:.0f} MB, first token p95 {p95:.2f} s"
    bench.judge("hold", ok, detail + " (goal 0, <= 300 MB, <= 1 s)")
    bench.report_problems()


PHASES: dict[str, Callable[[Bench], None]] = {
    "relay": relay,
    "latency": latency,
    "burst": burst,
    "hold": hold,
}


def run_protocol(config: ServiceConfig, sizes: Sizes, phases: list[str], floor_us: float) -> bool:
    with StandInProcess() as standin, tempfile.TemporaryDirectory() as state_dir:
        with ServiceProcess(config, standin.url, state_dir) as service:
            print(f"== {config.protocol}: gunicorn worker {service.worker_class()}")
            bench = Bench(standin, service, sizes, floor_us, [])
            bench.streams(4, 1, 2)  # warm-up: both workers import lazily and cache the token
            for name in phases:
                PHASES[name](bench)
    failed = [name for name, ok in bench.verdicts if not ok]
    print(f"== {config.protocol}: {'FAIL: ' + ', '.join(failed) if failed else 'PASS'}")
    return not failed


def export_commit(revision: str, destination: Path) -> Path:
    """A copy of the service's files at ``revision`` (git archive; the working tree untouched)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")
    return destination


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=("web", "legacy", "both"), default="both")
    parser.add_argument("--quick", action="store_true", help="small numbers, under a minute")
    parser.add_argument("--only", default=",".join(PHASES), help="phases, comma-separated")
    parser.add_argument("--worker", choices=("gthread", "gevent"), help="override the config")
    parser.add_argument("--workers", type=int, help="WEB_CONCURRENCY (default: the config's)")
    parser.add_argument("--commit", help="run the service as of this git revision")
    args = parser.parse_args()
    phases = [name.strip() for name in args.only.split(",")]
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    raise_fd_limit(sizes.hold_streams * 8 + 1024)
    floor_us = measure_floor()
    source = f"commit {args.commit}" if args.commit else "the working tree"
    print(f"service: {source}; floor {floor_us:.2f} us/event (json.loads + json.dumps)")
    protocols = ("web", "legacy") if args.protocol == "both" else (args.protocol,)
    with tempfile.TemporaryDirectory() as snapshot:
        checkout = export_commit(args.commit, Path(snapshot)) if args.commit else ROOT
        configs = [ServiceConfig(p, checkout, args.worker, args.workers) for p in protocols]
        if "relay" in phases:
            stack_floor(sizes, floor_us)
        passed = [run_protocol(config, sizes, phases, floor_us) for config in configs]
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main())
