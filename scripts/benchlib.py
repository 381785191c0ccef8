"""Timing shared by the benchmark scripts."""
import json
import statistics
import subprocess
import time


def median_seconds(body, seconds=3.0):
    """One warm-up call, then calls until `seconds` have passed (at least three); the median duration."""
    body()
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        body()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def swift_bench(binary, *arguments):
    """`vitmsn bench ARGUMENTS --json`, parsed."""
    out = subprocess.run([str(binary), "bench", *map(str, arguments), "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def swift_against_torch(binary, swift_arguments, torch_steps, batch, rounds, seconds):
    """Images/s medians over `rounds` interleaved rounds of the Swift CLI and of each PyTorch step."""
    results = {"swift": [], **{name: [] for name in torch_steps}}
    for _ in range(rounds):
        results["swift"].append(swift_bench(binary, *swift_arguments, "--seconds", seconds)["images_per_s"])
        for name, step in torch_steps.items():
            results[name].append(batch / median_seconds(step, seconds))
    return {name: statistics.median(values) for name, values in results.items()}
