"""GEMM side by side on the forward's and the backward's shapes, at 1 and 2 threads: this project's kernels,
Debian's OpenBLAS, BLIS and oneDNN (scripts/bench_gemm.c, built here against Debian's packages) and ONNX
Runtime's MLAS (a MatMul with a constant weight, which ORT pre-packs), interleaved round by round. Prints a
Markdown table of GFLOP/s with the share of the FMA peak measured in the same run.

    .venv/bin/python scripts/bench_gemm.py --rounds 3 --seconds 1
"""
import argparse
import os
import statistics
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

from benchlib import median_seconds

ROOT = Path(__file__).resolve().parent.parent
BLIS = "/usr/lib/x86_64-linux-gnu/blis-openmp"
# ViT-S/16 and ViT-B/16 at batch 8 (1576 tokens) and batch 1 (197): qkv, fc1, fc2, and the backward's
# weight gradients (op(A) transposed, nothing constant).
SHAPES = ["1576x1152x384", "1576x1536x384", "1576x384x1536", "197x1152x384", "197x384x1536",
          "1576x2304x768", "1576x3072x768", "1576x768x3072", "197x3072x768",
          "384x384x1576:t", "1536x384x1576:t", "768x3072x1576:t"]
LIBRARIES = ["vitmsn", "openblas", "blis", "onednn"]


def build(binary):
    """The C driver, with this project's kernels compiled by clang exactly as SwiftPM builds them."""
    subprocess.run(["bash", str(ROOT / "scripts" / "install_system_deps.sh"), "libopenblas-dev", "libblis-dev", "libdnnl-dev"], check=True)
    objects = binary.parent / "kernels.o"
    subprocess.run(["clang", "-O3", "-c", "-o", str(objects), str(ROOT / "Sources/CKernels/kernels.c"),
                    "-I", str(ROOT / "Sources/CKernels/include")], check=True)
    subprocess.run(["gcc", "-O2", "-fopenmp", "-o", str(binary), str(ROOT / "scripts/bench_gemm.c"), str(objects),
                    "-I", str(ROOT / "Sources/CKernels/include"), "-I", "/usr/include/x86_64-linux-gnu/blis-openmp",
                    f"-L{BLIS}", f"-Wl,-rpath,{BLIS}", "-lblis", "-ldnnl", "-lpthread", "-ldl", "-lm"], check=True)


def run_c(binary, library, threads, seconds, shapes):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), BLIS_NUM_THREADS=str(threads))
    out = subprocess.run([str(binary), library, str(threads), str(seconds), *shapes], check=True, capture_output=True, text=True, env=env).stdout
    return {line.split()[0]: float(line.split()[1]) for line in out.splitlines()}


def mlas_ms(shape, threads, seconds):
    """ONNX Runtime's MatMul: A (M, K) · B (K, N) with B an initializer (pre-packed), or both inputs."""
    size, _, mode = shape.partition(":")
    m, n, k = map(int, size.split("x"))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if mode else (m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    if mode:  # Aᵀ · B, both run-time inputs
        nodes = [helper.make_node("Transpose", ["A"], ["At"], perm=[1, 0]), helper.make_node("MatMul", ["At", "B"], ["C"])]
        inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, [k, m]), helper.make_tensor_value_info("B", TensorProto.FLOAT, [k, n])]
        initializers, feed = [], {"A": a, "B": b}
    else:
        nodes = [helper.make_node("MatMul", ["A", "B"], ["C"])]
        inputs = [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])]
        initializers, feed = [onnx.numpy_helper.from_array(b, "B")], {"A": a}
    graph = helper.make_graph(nodes, "gemm", inputs, [helper.make_tensor_value_info("C", TensorProto.FLOAT, [m, n])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return median_seconds(lambda: session.run(None, feed), seconds) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1)
    parser.add_argument("--threads", type=int, action="append")
    parser.add_argument("--shape", action="append")
    args = parser.parse_args()
    binary = ROOT / "out" / "bench_gemm"
    binary.parent.mkdir(exist_ok=True)
    build(binary)
    shapes = args.shape or SHAPES
    print(f"onnxruntime {onnxruntime.__version__}; GFLOP/s, median of {args.rounds} interleaved rounds (% of the FMA peak measured in the run)")
    for threads in args.threads or [1, 2]:
        times = {name: {s: [] for s in shapes} for name in LIBRARIES + ["mlas"]}
        peaks = []
        for _ in range(args.rounds):
            peaks.append(float(subprocess.run([str(binary), "peak", str(threads), "0"], check=True, capture_output=True, text=True).stdout.split()[1]))
            for library in LIBRARIES:
                for s, ms in run_c(binary, library, threads, args.seconds, shapes).items():
                    times[library][s].append(ms)
            for s in shapes:
                times["mlas"][s].append(mlas_ms(s, threads, args.seconds))
        peak = max(peaks)
        names = {"vitmsn": "swift-vitmsn", "openblas": "OpenBLAS 0.3.21", "blis": "BLIS 0.9", "onednn": "oneDNN 2.6", "mlas": "MLAS (ORT)"}
        print(f"\n{threads} thread(s), FMA peak {peak:.0f} GFLOP/s\n")
        print("| M×N×K | " + " | ".join(names[n] for n in LIBRARIES + ["mlas"]) + " |")
        print("|---" * (len(LIBRARIES) + 2) + "|")
        for s in shapes:
            size = s.partition(":")[0]
            m, n, k = map(int, size.split("x"))
            cells = []
            for name in LIBRARIES + ["mlas"]:
                gflops = 2 * m * n * k / statistics.median(times[name][s]) / 1e6
                cells.append(f"{gflops:.0f} ({100 * gflops / peak:.0f} %)")
            label = f"{size} (Aᵀ, B per call)" if s.endswith(":t") else size
            print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
