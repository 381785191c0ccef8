#!/usr/bin/env python3
"""`vitmsn serve` against Python model servers, in one interleaved run on loopback.

A load generator sends single-image classify requests (a real 640×480 JPEG) at concurrency 1, 4, 16 and 64
to each server in turn, round after round, and reports throughput and p50/p99 latency. Every server runs the
same ViT-S/16-shaped classifier (random weights, saved once in Transformers' format) on the same 2 cores:
- vitmsn serve (its /v1 classify endpoint; release build);
- KServe's Python model server around a Transformers pipeline (KServe v1 JSON, base64 image);
- FastAPI + uvicorn around a Transformers pipeline (raw body);
- TorchServe around a Transformers pipeline, if it starts here.
Beside them: `vitmsn bench` at batch 8 (the server's ceiling) and the single-image CLI time (decode +
forward). Every load loop is bounded in time.

    scripts/bench_serve.py [--seconds 15] [--rounds 2]
"""
import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "scripts", "serve_peers")
PYTHON = sys.executable


def make_model(directory):
    """A ViT-S/16 classifier with random weights, and ViT's processor, in Transformers' format."""
    import torch
    from transformers import ViTImageProcessor, ViTMSNConfig, ViTMSNForImageClassification
    torch.manual_seed(0)
    config = ViTMSNConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                          num_labels=1000, id2label={i: f"class_{i}" for i in range(1000)}, label2id={f"class_{i}": i for i in range(1000)})
    ViTMSNForImageClassification(config).eval().save_pretrained(directory)
    ViTImageProcessor().save_pretrained(directory)


def make_photo(path):
    """A real photo at 640×480, as a JPEG of the usual quality."""
    Image.open(os.path.join(ROOT, "Tests", "Fixtures", "images", "flower_original.jpg")).convert("RGB").resize((640, 480)).save(path, quality=90)


class Peer:
    """A server process and how to ask it to classify one image."""

    def __init__(self, name, command, port, path, body, headers=None, env=None, cwd=None, stop=None):
        self.name, self.port, self.path, self.body, self.headers, self.stop_command = name, port, path, body, headers or {}, stop
        self.log = open(os.path.join(tempfile.gettempdir(), f"bench-serve-{name.split()[0].lower()}.log"), "w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)

    def wait_ready(self, seconds=240):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None and self.stop_command is None:
                return f"exited with {self.process.returncode} (log: {self.log.name})"
            try:
                status, _ = self.request(timeout=60)
                if status == 200:
                    return None
            except OSError:
                pass
            time.sleep(1)
        return f"not answering after {seconds} s (log: {self.log.name})"

    def request(self, connection=None, timeout=120):
        own = connection is None
        connection = connection or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        connection.request("POST", self.path, body=self.body, headers=self.headers)
        response = connection.getresponse()
        payload = response.read()
        if own:
            connection.close()
        return response.status, payload

    def close(self):
        if self.stop_command:
            subprocess.run(self.stop_command, capture_output=True, timeout=60)
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def load(peer, concurrency, seconds):
    """`concurrency` keep-alive clients for `seconds`: (requests/s, p50 ms, p99 ms, errors)."""
    latencies, errors, lock = [], [0], threading.Lock()
    deadline = time.monotonic() + seconds

    def client():
        connection = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=120)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                status, _ = peer.request(connection)
            except (OSError, http.client.HTTPException):
                status = 0
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", peer.port, timeout=120)
            elapsed = time.perf_counter() - started
            with lock:
                if status == 200:
                    latencies.append(elapsed)
                else:
                    errors[0] += 1
        connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 180)
    wall = time.monotonic() - started
    if not latencies:
        return 0.0, float("nan"), float("nan"), errors[0]
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return len(latencies) / wall, statistics.median(latencies) * 1000, p99 * 1000, errors[0]


def vitmsn_bench(cli, model, *args):
    out = subprocess.run([cli, "bench", "--model", model, *map(str, args), "--json"], check=True, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out)


def torchserve_peer(model, photo, port, scratch):
    """TorchServe with the pipeline handler, or the reason it can't run here."""
    if not shutil.which("torchserve") and not os.path.exists(os.path.join(os.path.dirname(PYTHON), "torchserve")):
        return None, "torchserve is not installed in the venv"
    bin_dir = os.path.dirname(PYTHON)
    store = os.path.join(scratch, "model-store")
    os.makedirs(store, exist_ok=True)
    files = ",".join(os.path.join(model, f) for f in os.listdir(model))
    archive = subprocess.run([os.path.join(bin_dir, "torch-model-archiver"), "--model-name", "m", "--version", "1",
                              "--handler", os.path.join(PEERS, "torchserve_handler.py"), "--extra-files", files,
                              "--export-path", store, "--force"], capture_output=True, text=True, timeout=300)
    if archive.returncode != 0:
        return None, f"torch-model-archiver failed: {archive.stderr.strip()[-300:]}"
    config = os.path.join(scratch, "config.properties")
    with open(config, "w") as f:
        f.write(f"inference_address=http://127.0.0.1:{port}\nmanagement_address=http://127.0.0.1:{port + 1}\n"
                f"metrics_address=http://127.0.0.1:{port + 2}\ndefault_workers_per_model=1\ndisable_token_authorization=true\n"
                "enable_envvars_config=true\ninstall_py_dep_per_model=false\n")
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ.get("PATH", ""), OMP_NUM_THREADS="2")
    peer = Peer("TorchServe", [os.path.join(bin_dir, "torchserve"), "--start", "--foreground", "--ncs", "--model-store", store,
                               "--models", "m=m.mar", "--ts-config", config, "--disable-token-auth"],
                port, "/predictions/m", open(photo, "rb").read(), env=env, cwd=scratch,
                stop=[os.path.join(bin_dir, "torchserve"), "--stop"])
    return peer, None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cli", default=os.path.join(ROOT, ".build", "release", "vitmsn"))
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, action="append")
    parser.add_argument("--no-torchserve", action="store_true")
    parser.add_argument("--no-peers", action="store_true", help="vitmsn serve and the CLI alone (a quick latency check)")
    parser.add_argument("--dtype", default="f32", help="vitmsn's --dtype, for the server and its CLI figures (the peers stay fp32)")
    args = parser.parse_args()
    levels = args.concurrency or [1, 4, 16, 64]
    scratch = tempfile.mkdtemp(prefix="bench-serve-")
    model, photo = os.path.join(scratch, "vit-small"), os.path.join(scratch, "photo.jpg")
    make_model(model)
    make_photo(photo)
    jpeg = open(photo, "rb").read()
    cli_runs = {"batch8": [], "forward_ms": [], "forward_p99_ms": [], "decode_ms": [], "decode_p99_ms": []}

    def cli_round():  # the CLI figures, measured in every round beside the servers
        cli_runs["batch8"].append(vitmsn_bench(args.cli, model, "--batch", "8", "--seconds", "8", "--dtype", args.dtype)["images_per_s"])
        forward = vitmsn_bench(args.cli, model, "--batch", "1", "--seconds", args.seconds, "--dtype", args.dtype)
        decode = vitmsn_bench(args.cli, model, "--preprocess", photo, "--seconds", "3")
        for name, figures in (("forward", forward), ("decode", decode)):
            cli_runs[f"{name}_ms"].append(figures["median_ms"])
            cli_runs[f"{name}_p99_ms"].append(figures["p99_ms"])

    peers = [Peer("vitmsn serve", [args.cli, "serve", "--model", f"m={model}", "--port", "18080", "--max-batch-size", "8", "--log-format", "json",
                                   "--dtype", args.dtype],
                  18080, "/v1/models/m/classify", jpeg)]
    payload = json.dumps({"instances": [{"image": {"b64": base64.b64encode(jpeg).decode()}}]})
    peers.append(Peer("KServe", [PYTHON, os.path.join(PEERS, "kserve_model.py"), model, "18090"], 18090, "/v1/models/m:predict", payload,
                      {"Content-Type": "application/json"}))
    peers.append(Peer("FastAPI + uvicorn", [PYTHON, os.path.join(PEERS, "fastapi_app.py"), model, "18100"], 18100, "/classify", jpeg))
    if args.no_peers:
        peers = peers[:1]
    skipped = []
    if not args.no_torchserve and not args.no_peers:
        peer, why = torchserve_peer(model, photo, 18110, scratch)
        if peer:
            peers.append(peer)
        else:
            skipped.append(("TorchServe", why))
    ready = []
    for peer in peers:
        problem = peer.wait_ready()
        if problem:
            skipped.append((peer.name, problem))
            peer.close()
        else:
            ready.append(peer)
    for name, why in skipped:
        print(f"{name}: not measured: {why}", flush=True)
    results = {(p.name, c): [] for p in ready for c in levels}
    try:
        for peer in ready:  # warm-up
            load(peer, 1, 3)
        for _ in range(args.rounds):
            cli_round()
            for concurrency in levels:
                for peer in ready:
                    results[(peer.name, concurrency)].append(load(peer, concurrency, args.seconds))
    finally:
        for peer in ready:
            peer.close()
    batch8 = statistics.median(cli_runs["batch8"])
    forward_ms, decode_ms = statistics.median(cli_runs["forward_ms"]), statistics.median(cli_runs["decode_ms"])
    single_ms = forward_ms + decode_ms
    # The CLI's own tail: forwards timed back to back for as long as a server level runs (the sum of the two p99s).
    single_p99_ms = statistics.median(cli_runs["forward_p99_ms"]) + statistics.median(cli_runs["decode_p99_ms"])
    print(f"vitmsn bench (median of the rounds): batch 8 {batch8:.2f} images/s; single image {single_ms:.1f} ms "
          f"(forward {forward_ms:.1f} + decode and preprocess {decode_ms:.1f}); its p99 {single_p99_ms:.1f} ms "
          f"= {single_p99_ms / single_ms:.2f}× its median")
    print("\n| server | concurrency | images/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for concurrency in levels:
        for peer in ready:
            runs = results[(peer.name, concurrency)]
            rate = statistics.median(r[0] for r in runs)
            p50 = statistics.median(r[1] for r in runs)
            p99 = statistics.median(r[2] for r in runs)
            summary[(peer.name, concurrency)] = (rate, p50, p99)
            print(f"| {peer.name} | {concurrency} | {rate:.2f} | {p50:.0f} | {p99:.0f} | {sum(r[3] for r in runs)} |", flush=True)
    ours = "vitmsn serve"
    if (ours, 16) in summary:
        rate16 = summary[(ours, 16)][0]
        best = max((summary[(p.name, 16)][0] for p in ready if p.name != ours), default=float("nan"))
        print(f"\nconcurrency 16: {rate16:.2f} images/s = {rate16 / batch8:.2f}× vitmsn bench batch 8 (target ≥ 0.9), "
              f"{rate16 / best:.2f}× the best Python peer (target ≥ 2)")
    if (ours, 1) in summary:
        p99 = summary[(ours, 1)][2]
        print(f"concurrency 1: p99 {p99:.0f} ms = {p99 / single_ms:.2f}× the single-image CLI time (target ≤ 1.25), "
              f"{p99 / single_p99_ms:.2f}× the CLI's own p99")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
