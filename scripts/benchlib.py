"""Timing shared by the benchmark scripts."""
import statistics
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
