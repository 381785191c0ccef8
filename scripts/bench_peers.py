"""Side-by-side forward benchmark: the Swift CLI (`vitmsn bench`), PyTorch (sdpa and eager attention)
and ONNX Runtime (the same model exported to ONNX) on the same shapes, interleaved round by round so
machine noise hits all alike. Prints images/s (median over rounds) and Swift's ratio to the best peer.

Each round runs every engine once, in an order rotated from round to round. The ratios are paired: each
round's Swift figure over the same round's peer figure, the median of those over the rounds, against the
peer with the lowest such median. The host's slow spells last seconds to minutes, so a ratio of two medians
taken minutes apart moves with them, and a ratio within a round much less.

With --int8, the dynamic-quantisation peers instead: `vitmsn bench --dtype int8` (and its f32 for the
ratio to itself), PyTorch's `torch.ao.quantization.quantize_dynamic` (qint8 Linear layers, the x86
engine) and ONNX Runtime's `quantize_dynamic` (QInt8 weights, per channel; its default activations;
`reduce_range`, 7-bit weights, on CPUs without VNNI, as its documentation advises for them).

    .venv/bin/python scripts/bench_peers.py --preset small --batch 8 --seconds 8 --rounds 3
    .venv/bin/python scripts/bench_peers.py --int8 --preset small --preset base --batch 1 --batch 8
"""
import argparse
import statistics
from pathlib import Path

import onnxruntime
import torch
from transformers import ViTMSNConfig, ViTMSNModel

from benchlib import median_seconds, swift_bench

PRESETS = {  # (hidden, layers, heads, intermediate, patch): the released checkpoints' shapes
    "small": (384, 12, 6, 1536, 16), "base": (768, 12, 12, 3072, 16), "large": (1024, 24, 16, 4096, 16),
    "base-4": (768, 12, 12, 3072, 4), "large-7": (1024, 24, 16, 4096, 7),
}
ROOT = Path(__file__).resolve().parent.parent


def torch_images_per_second(model, pixels, seconds):
    with torch.inference_mode():
        return pixels.shape[0] / median_seconds(lambda: model(pixel_values=pixels), seconds)


def onnx_session(model, path):
    """The model exported once (dynamic batch), run by ONNX Runtime's CPU provider on all cores."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), input_names=["pixel_values"],
                          output_names=["last_hidden_state"], dynamic_axes={"pixel_values": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def cpu_has_vnni():
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    return "avx512_vnni" in flags or "avx_vnni" in flags


def onnx_int8_session(model, path):
    """ONNX Runtime's dynamic quantisation of the exported model: int8 weights per channel, activations
    quantised at run time (MatMulInteger / DynamicQuantizeLinear)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    reduce_range = not cpu_has_vnni()
    quantized = path.with_suffix(".int8-reduced.onnx" if reduce_range else ".int8.onnx")
    if not quantized.exists():
        onnx_session(model, path)
        quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=reduce_range)
    return onnxruntime.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])


def torch_int8_model(model):
    """PyTorch's dynamic quantisation: every nn.Linear as a qint8 dynamic Linear (fbgemm/x86 kernels)."""
    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def onnx_images_per_second(session, pixels, seconds):
    inputs = {"pixel_values": pixels.numpy()}
    return pixels.shape[0] / median_seconds(lambda: session.run(None, inputs), seconds)


def swift_images_per_second(binary, preset, batch, seconds, dtype="f32"):
    return swift_bench(binary, "--preset", preset, "--batch", batch, "--seconds", seconds, "--dtype", dtype)["images_per_s"]


def interleaved(engines, rounds):
    """Each engine's images/s in each of `rounds` rounds, the engines' order rotated by one each round."""
    names = list(engines)
    results = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(engines[name]())
    return results


def paired_ratio(results, mine, others):
    """The lowest, over `others`, of the median over rounds of results[mine][r] / results[other][r]."""
    return min(statistics.median(a / b for a, b in zip(results[mine], results[other])) for other in others)


def int8_table(args):
    print("| model | batch | Swift int8 img/s | Swift f32 | PyTorch int8 | ONNX Runtime int8 | Swift int8 / best peer, paired | Swift int8 / f32, paired |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.preset or ["small"]:
        hidden, layers, heads, intermediate, patch = PRESETS[preset]
        config = ViTMSNConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                              intermediate_size=intermediate, patch_size=patch, attn_implementation="eager")
        model = ViTMSNModel(config).eval()
        session = onnx_int8_session(model, ROOT / "out" / "onnx" / f"{preset}.onnx")
        sdpa = ViTMSNModel(ViTMSNConfig(**{**config.to_dict(), "attn_implementation": "sdpa"})).eval()
        sdpa.load_state_dict(model.state_dict())
        quantized = torch_int8_model(sdpa)
        for batch in args.batch or [8]:
            pixels = torch.randn(batch, 3, 224, 224)
            results = interleaved({
                "int8": lambda: swift_images_per_second(args.binary, preset, batch, args.seconds, "int8"),
                "f32": lambda: swift_images_per_second(args.binary, preset, batch, args.seconds, "f32"),
                "torch": lambda: torch_images_per_second(quantized, pixels, args.seconds),
                "onnx": lambda: onnx_images_per_second(session, pixels, args.seconds),
            }, args.rounds)
            m = {k: statistics.median(v) for k, v in results.items()}
            print(f"| {preset} | {batch} | {m['int8']:.2f} | {m['f32']:.2f} | {m['torch']:.2f} | {m['onnx']:.2f} "
                  f"| {paired_ratio(results, 'int8', ['torch', 'onnx']):.2f}× | {paired_ratio(results, 'int8', ['f32']):.2f}× |", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", action="append", choices=PRESETS)
    parser.add_argument("--batch", type=int, action="append")
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--binary", default=ROOT / ".build" / "release" / "vitmsn")
    parser.add_argument("--int8", action="store_true", help="the dynamic-quantisation peers instead of fp32")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads, {torch.backends.quantized.engine} quantized engine), "
          f"onnxruntime {onnxruntime.__version__}")
    if args.int8:
        return int8_table(args)
    print("| model | batch | Swift img/s | PyTorch sdpa | PyTorch eager | ONNX Runtime | Swift / best peer, paired |")
    print("|---|---|---|---|---|---|---|")
    for preset in args.preset or ["small"]:
        hidden, layers, heads, intermediate, patch = PRESETS[preset]
        models = {}
        for attention in ["sdpa", "eager"]:
            config = ViTMSNConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                  intermediate_size=intermediate, patch_size=patch, attn_implementation=attention)
            models[attention] = ViTMSNModel(config).eval()
        session = onnx_session(models["eager"], ROOT / "out" / "onnx" / f"{preset}.onnx")
        for batch in args.batch or [8]:
            pixels = torch.randn(batch, 3, 224, 224)
            results = interleaved({
                "swift": lambda: swift_images_per_second(args.binary, preset, batch, args.seconds),
                **{attention: lambda model=model: torch_images_per_second(model, pixels, args.seconds) for attention, model in models.items()},
                "onnx": lambda: onnx_images_per_second(session, pixels, args.seconds),
            }, args.rounds)
            m = {k: statistics.median(v) for k, v in results.items()}
            print(f"| {preset} | {batch} | {m['swift']:.2f} | {m['sdpa']:.2f} | {m['eager']:.2f} | {m['onnx']:.2f} "
                  f"| {paired_ratio(results, 'swift', ['sdpa', 'eager', 'onnx']):.2f}× |", flush=True)


if __name__ == "__main__":
    main()
