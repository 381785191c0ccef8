"""Where the forward pass's time goes: `perf record` over `vitmsn bench` (Debian's linux-perf), samples grouped
by kind of work. Set-up (random weights, the FMA-peak measurement) is left out of the shares.

    python3 scripts/profile_forward.py --preset small --batch 8 [--binary PATH]
"""
import argparse
import re
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GROUPS = [  # (group, pattern on the symbol), first match wins
    ("set-up", r"SeededGenerator|fillRandomly|__cos|__ieee754_log|fma_peak|log@@|_dl_|do_lookup"),
    ("GEMM", r"gemm_packed|gemm_micro|sgemm|dgemm|kernel_[0-9a-z_]*(haswell|zen|skylake)|blas_thread|gemm_"),
    ("GELU", r"activate"),
    ("softmax", r"softmax"),
    ("LayerNorm", r"layerNorm|rowStatistics"),
    ("memory copies", r"memmove|memcpy|memset|clear_page"),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--binary", default=ROOT / ".build" / "release" / "vitmsn")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "perf.data"
        subprocess.run(["perf", "record", "-q", "-o", str(data), str(args.binary), "bench", "--preset", args.preset,
                        "--batch", str(args.batch), "--seconds", str(args.seconds)], check=True, capture_output=True)
        report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "symbol"], check=True,
                                capture_output=True, text=True).stdout
    shares = defaultdict(float)
    for line in report.splitlines():
        match = re.match(r"\s*([0-9.]+)%\s+\[[.k]\]\s+(.*)", line)
        if not match:
            continue
        percent, symbol = float(match.group(1)), match.group(2)
        group = next((name for name, pattern in GROUPS if re.search(pattern, symbol)), "other")
        shares[group] += percent
    work = sum(v for k, v in shares.items() if k != "set-up")
    print(f"{args.binary}: {args.preset} batch {args.batch}, share of the forward's samples")
    for name, value in sorted(shares.items(), key=lambda kv: -kv[1]):
        if name != "set-up":
            print(f"  {name:14s} {100 * value / work:5.1f} %")


if __name__ == "__main__":
    main()
