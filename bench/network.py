"""Benchmark ``backfill send`` over simulated networks: round trips and rate limits.

    python bench/network.py [--seconds 60] [--only NAME]

For each scenario (a round trip and a rate limit, possibly one that halves mid-run) and each
mode (the default settings, i.e. ``--concurrency auto``, and fixed ``--concurrency`` values),
starts a fresh ``backfill sandbox --delay D --rate-limit L [--rate-limit-schedule ...]
--retry-after 1 --received FILE`` in its own process, then ``backfill send`` of a 300,000-row
export in another, stopped with SIGINT after SECONDS (no scenario sends all its rows in a
minute; a stop is the user's Ctrl-C: requests in flight finish and are recorded).

Read from the send's --json summary and the files:

    accepted/s   rows sent (answered 200) / the send's elapsed seconds
    % of limit   accepted/s / the limit in force, averaged over the run's elapsed time
    % 429        requests answered 429 / requests (no other fault is injected, so every
                 request not answered 200 was a 429)
    accounted    every event the sandbox accepted has exactly one `sent` record, and no row
                 has two records (multisets of bodies compared)
    RSS          the send's peak RSS (VmHWM, read every half second until the stop)

Targets: auto >= 90% of the limit with < 2% answered 429 in every limited scenario; with no
limit, auto >= 90% of the best of fixed 16, 64 and 256 in the same run.

    python bench/network.py --fast-path BEFORE [--after AFTER] [--rounds 3]

The fast path instead: ``backfill send`` of 100,000 rows into bench/send.py's nginx sink
(answers at once, never 429), CPU microseconds per request, the code before (an export of an
earlier commit in BEFORE, with ``--concurrency 64``, the old default of the benchmark) against
the code in AFTER (default: the backfill this script imports) with the defaults (auto) and
with ``--concurrency 64``, side by side in every round. Target: auto within 10% of before.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gen_events import generated
from ratelimit import free_port, wait_for_port

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "out"
ROOT = BENCH.parent
MAPPING = ROOT / "sample_data" / "mapping.toml"
ROWS = 300_000  # more than any mode sends in a minute (auto without a limit: about 4,000/s)
HALVING = "100 ms, 200/s halving to 100/s after 30 s"
NO_LIMIT = "200 ms, no limit"


@dataclass(frozen=True)
class Scenario:
    name: str
    delay: float
    limit: float | None
    schedule: tuple[tuple[float, float], ...] = ()
    modes: tuple[str, ...] = ("auto", "8", "64")

    def mean_limit(self, seconds: float) -> float | None:
        """The limit in force, averaged over the first ``seconds`` of requests."""
        if self.limit is None:
            return None
        steps = [(0.0, self.limit), *self.schedule]
        total = 0.0
        for (start, limit), (end, _) in zip(steps, [*steps[1:], (seconds, 0.0)], strict=True):
            total += limit * max(0.0, min(end, seconds) - start)
        return total / seconds


SCENARIOS = (
    Scenario("0 ms, 200/s", 0.0, 200),
    Scenario("50 ms, 50/s", 0.05, 50),
    Scenario("200 ms, 500/s", 0.2, 500),
    Scenario("250 ms, 20/s", 0.25, 20),
    Scenario("50 ms, 1,000/s", 0.05, 1000),
    Scenario(HALVING, 0.1, 200, ((30.0, 100.0),)),
    Scenario(NO_LIMIT, 0.2, None, modes=("auto", "8", "16", "64", "256")),
)


@dataclass
class Outcome:
    scenario: str
    mode: str
    seconds: float = 0.0
    requests: int = 0
    sent: int = 0
    accepted_per_s: float = 0.0
    of_limit: float | None = None
    throttled: float = 0.0
    accounted: bool = False
    accounted_note: str = ""
    rss_mib: float = 0.0
    settled: str = ""
    load: float = field(default_factory=lambda: os.getloadavg()[0])


def start_sandbox(scenario: Scenario, port: int, received: Path) -> subprocess.Popen[bytes]:
    """The sandbox of a scenario, in its own process, logging what it accepts."""
    command = [sys.executable, "-m", "backfill", "sandbox", "--port", str(port)]
    command += ["--delay", str(scenario.delay), "--retry-after", "1", "--received", str(received)]
    if scenario.limit is not None:
        command += ["--rate-limit", str(scenario.limit)]
    if scenario.schedule:
        steps = ",".join(f"{after:g}:{limit:g}" for after, limit in scenario.schedule)
        command += ["--rate-limit-schedule", steps]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return process


def peak_rss_mib(pid: int) -> float:
    """VmHWM of a live process, MiB (0 once it has gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_send(events: Path, port: int, mode: str, seconds: float, results: Path) -> tuple:
    """One send for ``seconds``, stopped with SIGINT; its --json summary and peak RSS."""
    command = [sys.executable, "-m", "backfill", "send", str(events), "-m", str(MAPPING)]
    command += ["--base-url", f"http://127.0.0.1:{port}", "--project-id", "pr_bench"]
    if mode != "auto":
        command += ["--concurrency", mode]
    command += ["--no-progress", "--overwrite", "-o", str(results), "--json"]
    env = {**os.environ, "EMBEDDABLES_API_KEY": "rk_sandbox"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    rss, deadline = 0.0, time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        rss = max(rss, peak_rss_mib(process.pid))
        time.sleep(0.5)
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    summary: dict[str, Any] = json.loads(out)
    return summary, rss


def body_key(body: dict[str, Any]) -> str:
    """An event body as comparable text."""
    fields = ("embeddable_id", "timestamp", "custom_event_name", "custom_event_props")
    return json.dumps([body[name] for name in fields] + [body["identifiers"]], sort_keys=True)


def accounted(results: Path, received: Path) -> tuple[bool, str]:
    """Whether each accepted event has one `sent` record and no row has two records."""
    records = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    rows = Counter((r["source"], r["row"]) for r in records)
    twice = sum(1 for count in rows.values() if count > 1)
    sent = Counter(body_key(json.loads(r["payload"])) for r in records if r["status"] == "sent")
    lines = received.read_text(encoding="utf-8").splitlines()
    arrived = Counter(body_key(json.loads(line)) for line in lines)
    ok = twice == 0 and sent == arrived
    note = f"{len(records):,} records, {len(lines):,} accepted events"
    if not ok:
        note += f"; {twice} rows twice, {sum((arrived - sent).values())} events without a record"
    return ok, note


def measure(scenario: Scenario, mode: str, events: Path, seconds: float) -> Outcome:
    """One scenario in one mode, against a sandbox of its own."""
    outcome = Outcome(scenario.name, mode)
    results = OUT / "network_results.jsonl"
    received = OUT / "network_received.jsonl"
    received.unlink(missing_ok=True)
    port = free_port()
    sandbox = start_sandbox(scenario, port, received)
    try:
        summary, outcome.rss_mib = run_send(events, port, mode, seconds, results)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    outcome.seconds = summary["elapsed_seconds"]
    outcome.requests = summary["requests"]
    outcome.sent = summary["by_status"]["sent"]
    outcome.accepted_per_s = outcome.sent / outcome.seconds
    limit = scenario.mean_limit(outcome.seconds)
    outcome.of_limit = outcome.accepted_per_s / limit if limit else None
    outcome.throttled = (outcome.requests - outcome.sent) / outcome.requests
    outcome.accounted, outcome.accounted_note = accounted(results, received)
    if summary.get("settled_concurrency") is not None:
        paced = "paced " if summary["rate_paced"] else ""
        outcome.settled = (
            f"{paced}{summary['settled_rate']:,.0f}/s, {summary['settled_concurrency']:,.0f}"
            f" in flight, paused {summary['paused_seconds']:.0f} s"
        )
    return outcome


def table(outcomes: list[Outcome]) -> str:
    """The outcomes as one Markdown table."""
    lines = [
        "| scenario | mode | seconds | requests | accepted/s | % of limit | % 429 | rows"
        " accounted | peak RSS MiB | auto settled on |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for o in outcomes:
        mode = "default (auto)" if o.mode == "auto" else f"`--concurrency {o.mode}`"
        of_limit = f"{o.of_limit:.1%}" if o.of_limit is not None else "-"
        lines.append(
            f"| {o.scenario} | {mode} | {o.seconds:.1f} | {o.requests:,} | {o.accepted_per_s:,.1f}"
            f" | {of_limit} | {o.throttled:.2%} | {'yes' if o.accounted else 'NO'}"
            f" | {o.rss_mib:.0f} | {o.settled} |"
        )
    return "\n".join(lines)


def verdicts(outcomes: list[Outcome]) -> list[str]:
    """Each target, met or missed, with its figures."""
    lines = []
    for o in outcomes:
        if o.mode != "auto" or o.of_limit is None:
            continue
        ok = o.of_limit >= 0.9 and o.throttled < 0.02 and o.accounted
        lines.append(
            f"{o.scenario}: auto {o.of_limit:.1%} of the limit, {o.throttled:.2%} answered 429,"
            f" rows accounted {'yes' if o.accounted else 'NO'}: {'met' if ok else 'MISSED'}"
        )
    free = {o.mode: o for o in outcomes if o.scenario == NO_LIMIT}
    fixed = [free[m] for m in ("16", "64", "256") if m in free]
    if "auto" in free and fixed:
        best = max(fixed, key=lambda o: o.accepted_per_s)
        share = free["auto"].accepted_per_s / best.accepted_per_s
        lines.append(
            f"{NO_LIMIT}: auto {free['auto'].accepted_per_s:,.1f}/s = {share:.1%} of the best"
            f" fixed (--concurrency {best.mode}, {best.accepted_per_s:,.1f}/s):"
            f" {'met' if share >= 0.9 else 'MISSED'}"
        )
    return lines


def fast_path(before: Path, after: Path, rounds: int) -> int:
    """CPU per request against nginx: before at 64 in flight, after with auto and at 64."""
    import send as send_bench  # nginx and its helpers; imported here, it may install nginx

    variants = (("before, --concurrency 64", before, "64"), ("after, default (auto)", after, ""))
    variants += (("after, --concurrency 64", after, "64"),)
    events, mapping = send_bench.ensure_events(100_000), send_bench.ensure_mapping()
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    with send_bench.Sink() as sink:
        for round_number in range(rounds):
            shift = round_number % len(variants)
            for label, source, concurrency in variants[shift:] + variants[:shift]:
                os.environ["PYTHONPATH"] = str(source)
                send_bench.warm_cache(events)
                run = fast_path_run(send_bench, sink, events, mapping, concurrency, label)
                cpu[label].append(run.cpu_us)
                print(f"round {round_number + 1}: {label}: {send_bench.describe(run)}", flush=True)
    print(f"\nload average now {os.getloadavg()}\n")
    print("| code, mode | CPU µs/request, each round | median |\n|---|---|---:|")
    medians = {label: sorted(values)[len(values) // 2] for label, values in cpu.items()}
    for label, values in cpu.items():
        rounds_text = ", ".join(f"{value:.0f}" for value in values)
        print(f"| {label} | {rounds_text} | {medians[label]:.0f} |")
    ratio = medians[variants[1][0]] / medians[variants[0][0]]
    print(f"\nauto / before: {ratio:.2f} (target <= 1.10): {'met' if ratio <= 1.1 else 'MISSED'}")
    return 0


def fast_path_run(
    send_bench: Any, sink: Any, events: Path, mapping: Path, concurrency: str, label: str
) -> Any:
    """One ``backfill send`` into the sink, under bench/measure.py; checked: every row sent."""
    results, summary_path = OUT / "fast_path.jsonl", OUT / "fast_path_summary.json"
    send = [*send_bench.backfill_program(), "send", str(events), "-m", str(mapping)]
    send += ["--base-url", sink.url, "--project-id", send_bench.PROJECT_ID, "--no-progress"]
    send += ["-o", str(results), "--overwrite", "--json"]
    send += ["--concurrency", concurrency] if concurrency else []
    command = ["sh", "-c", 'out=$1; shift; exec "$@" > "$out"', "sh", str(summary_path), *send]
    run = send_bench.measured(label, command, sink, send_bench.bench_env())
    if run.ok:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        run.requests, run.sending_s = summary["requests"], summary["elapsed_seconds"]
        if summary["by_status"]["sent"] != 100_000:
            run.error = f"sent {summary['by_status']['sent']:,} of 100,000"
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of each send")
    parser.add_argument("--only", help="run the scenarios whose name holds this text")
    parser.add_argument("--modes", help="comma-separated modes to run (default: all)")
    parser.add_argument("--fast-path", type=Path, metavar="BEFORE", help="see the docstring")
    parser.add_argument("--after", type=Path, default=ROOT, help="the code after (--fast-path)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --fast-path")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.fast_path is not None:
        return fast_path(args.fast_path, args.after, args.rounds)
    events = generated(OUT / "network_300k.csv", ROWS, invalid_rate=0.0)
    outcomes = []
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    for scenario in SCENARIOS:
        if args.only and args.only not in scenario.name:
            continue
        for mode in scenario.modes:
            if args.modes and mode not in args.modes.split(","):
                continue
            print(f"{scenario.name}, {mode}: {args.seconds:.0f} s ...", flush=True)
            outcome = measure(scenario, mode, events, args.seconds)
            print(f"  {outcome}", flush=True)
            outcomes.append(outcome)
    print(f"\nstarted {started}, load average now {os.getloadavg()}\n")
    print(table(outcomes))
    print()
    print("\n".join(verdicts(outcomes)))
    data = {"started": started, "seconds": args.seconds, "outcomes": [asdict(o) for o in outcomes]}
    (OUT / "network.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
