#!/usr/bin/env python3
"""End-to-end checks of `vitmsn serve` with real clients, on loopback ports the OS picks.

tritonclient.http in JSON and binary modes against `vitmsn classify`/`embed`; dynamic batching; overload,
timeout, body-size, bad-input, image-bomb, auth and shutdown behaviour; schemathesis against /openapi.json;
and a soak of mixed good and bad requests with the resident memory before and after. Every wait is bounded.

    scripts/check_serve.py .build/debug/vitmsn [--soak 100000]
"""
import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
import tritonclient.http as triton

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "Tests", "Fixtures", "models")
IMAGES = os.path.join(ROOT, "Tests", "Fixtures", "images")
CLASSIFIER = os.path.join(MODELS, "classifier_single")
BACKBONE = os.path.join(MODELS, "base")
PHOTOS = [os.path.join(IMAGES, name) for name in ("flower_original.jpg", "baseline_420.jpg", "gray.png", "exif_orientation_6.jpg")]
failures = []


def check(condition, what):
    print(("ok   " if condition else "FAIL ") + what, flush=True)
    if not condition:
        failures.append(what)


class Server:
    """`vitmsn serve` on a free port; stopped (SIGTERM) on exit."""

    def __init__(self, cli, *options, models=(("cls", CLASSIFIER), ("base", BACKBONE))):
        args = [cli, "serve", "--port", "0", "--threads", "2"] + [f"--model={n}={d}" for n, d in models] + list(options)
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.process.stdout.readline()  # the server prints its address once bound
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            self.process.kill()
            self.log.seek(0)
            raise SystemExit(f"server did not start: {line!r} {self.log.read().decode()[-2000:]}")
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self, timeout=30):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None

    def rss_kib(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            return int(next(line for line in status if line.startswith("VmRSS")).split()[1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def request(url, data=None, headers=None, method=None, timeout=30):
    """(status, headers, body) of one HTTP request; errors are answers too."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def cli_json(cli, *args):
    return json.loads(subprocess.run([cli, *args], check=True, capture_output=True, text=True, timeout=120).stdout)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def text(element):
    """A BYTES element as tritonclient hands it back: bytes in binary mode, str in JSON mode."""
    return element.decode() if isinstance(element, bytes) else str(element)


def bytes_input(files, binary):
    images = triton.InferInput("images", [len(files)], "BYTES")
    if binary:
        images.set_data_from_numpy(np.array(files, dtype=object), binary_data=True)
    else:  # JSON carries no raw bytes: base64 strings
        images.set_data_from_numpy(np.array([base64.b64encode(f).decode() for f in files], dtype=object), binary_data=False)
    return images


def protocol_checks(cli, server):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=30)
    check(client.is_server_live() and client.is_server_ready(), "v2 health: live and ready")
    check(client.is_model_ready("cls") and not client.is_model_ready("nope"), "v2 model ready: cls yes, nope no")
    meta = client.get_model_metadata("cls")
    check([i["name"] for i in meta["inputs"]] == ["pixel_values", "images"] and meta["inputs"][0]["shape"] == [-1, 3, 16, 16],
          "v2 model metadata lists pixel_values [-1, 3, 16, 16] and images")
    check("binary_tensor_data" in client.get_server_metadata()["extensions"], "v2 server metadata names the binary extension")

    expected = cli_json(cli, "classify", "--model", CLASSIFIER, "--top-k", "5", "--json", *PHOTOS)
    files = [read_file(p) for p in PHOTOS]
    for binary in (False, True):
        mode = "binary" if binary else "JSON"
        outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary), triton.InferRequestedOutput("logits", binary_data=binary)]
        result = client.infer("cls", [bytes_input(files, binary)], outputs=outputs)
        probabilities = result.as_numpy("probabilities")
        check(probabilities.shape == (len(PHOTOS), 5), f"tritonclient {mode}: probabilities of shape (4, 5)")
        labels = json.load(open(os.path.join(CLASSIFIER, "config.json")))["id2label"]
        worst = 0.0
        for row, entry in zip(probabilities, expected):
            for prediction in entry["predictions"]:
                index = next(int(k) for k, v in labels.items() if v == prediction["label"])
                worst = max(worst, abs(float(row[index]) - prediction["score"]))
        check(worst <= 1e-6, f"tritonclient {mode}: probabilities equal `vitmsn classify` (worst {worst:.2e})")
        classes = client.infer("cls", [bytes_input(files[:1], binary)],
                               outputs=[triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)]).as_numpy("probabilities")
        top = expected[0]["predictions"][0]
        check(classes.shape == (1, 2) and text(classes[0][0]).endswith(":" + top["label"]), f"tritonclient {mode}: classification extension ranks {top['label']} first")

    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "embeddings.jsonl")
        subprocess.run([cli, "embed", "--model", BACKBONE, "--format", "jsonl", "--output", out, *PHOTOS], check=True, capture_output=True, timeout=120)
        embedded = [json.loads(line) for line in open(out)]
    expected_vectors = np.array([e["embedding"] for e in embedded], dtype=np.float32)
    for binary in (False, True):
        mode = "binary" if binary else "JSON"
        result = client.infer("base", [bytes_input(files, binary)], outputs=[triton.InferRequestedOutput("embedding", binary_data=binary)])
        worst = float(np.abs(result.as_numpy("embedding") - expected_vectors).max())
        check(worst <= 1e-6, f"tritonclient {mode}: embeddings equal `vitmsn embed` (worst {worst:.2e})")

    # pixel_values in, the model's own preprocessing skipped: same logits as the image path gives.
    pixels = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    answers = []
    for binary in (False, True):
        tensor = triton.InferInput("pixel_values", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels, binary_data=binary)
        answers.append(client.infer("cls", [tensor], outputs=[triton.InferRequestedOutput("logits", binary_data=binary)]).as_numpy("logits"))
    check(answers[0].shape == (2, 5) and np.array_equal(answers[0], answers[1]), "tritonclient pixel_values: JSON and binary give the same logits")
    hidden = client.infer("base", [tensor], outputs=[triton.InferRequestedOutput("last_hidden_state")]).as_numpy("last_hidden_state")
    check(hidden.shape == (2, 17, 32), "last_hidden_state has shape (2, 17, 32)")

    status, headers, body = request(f"{server.url}/v1/models/cls/classify?top_k=3", data=files[0])
    simple = json.loads(body)
    check(status == 200 and [p["label"] for p in simple] == [p["label"] for p in expected[0]["predictions"][:3]]
          and all(abs(a["score"] - b["score"]) <= 1e-6 for a, b in zip(simple, expected[0]["predictions"])), "/v1 classify equals `vitmsn classify`")
    boundary = "vitmsnboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode() \
        + files[0] + f"\r\n--{boundary}--\r\n".encode()
    status, _, body = request(f"{server.url}/v1/models/cls/classify?top_k=3", data=form, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    check(status == 200 and json.loads(body) == simple, "/v1 classify takes a multipart upload (curl -F)")
    status, headers, body = request(f"{server.url}/v1/models/base/embed", data=files[0], headers={"Accept": "application/octet-stream"})
    check(status == 200 and np.array_equal(np.frombuffer(body, dtype="<f4"), expected_vectors[0]), "/v1 embed as raw float32 equals `vitmsn embed`")
    status, _, body = request(f"{server.url}/v1/models/base/embed?normalize=true", data=files[0])
    check(status == 200 and abs(float(np.linalg.norm(json.loads(body))) - 1) < 1e-5, "/v1 embed?normalize=true is unit length")


def bad_input_checks(server):
    jpeg = read_file(PHOTOS[0])
    cases = [
        ("unknown model", f"/v2/models/nope/infer", b"{}", 404, "no model 'nope'"),
        ("unknown version", f"/v2/models/cls/versions/7/infer", b"{}", 404, "version 1 only"),
        ("not JSON", f"/v2/models/cls/infer", b"{", 400, "not valid JSON"),
        ("wrong datatype", f"/v2/models/cls/infer", json.dumps({"inputs": [{"name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "INT8", "data": [0] * 768}]}).encode(), 400, "must be FP32"),
        ("wrong shape", f"/v2/models/cls/infer", json.dumps({"inputs": [{"name": "pixel_values", "shape": [1, 3, 8, 8], "datatype": "FP32", "data": [0] * 192}]}).encode(), 400, "must have shape [N, 3, 16, 16]"),
        ("short data", f"/v2/models/cls/infer", json.dumps({"inputs": [{"name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0] * 7}]}).encode(), 400, "must hold 768 numbers"),
        ("unknown output", f"/v2/models/base/infer", json.dumps({"inputs": [{"name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": [0] * 768}], "outputs": [{"name": "logits"}]}).encode(), 400, "has no output 'logits'"),
        ("not an image", f"/v1/models/cls/classify", b"%PDF-1.7 not an image", 400, "unsupported format"),
        ("broken GIF", f"/v1/models/cls/classify", b"GIF89a not an image", 400, "invalid GIF"),
        ("truncated JPEG", f"/v1/models/cls/classify", jpeg[:200], 400, "the image"),
        ("bad top_k", f"/v1/models/cls/classify?top_k=-1", jpeg, 400, "top_k must be a positive integer"),
        ("image bomb", f"/v1/models/cls/classify", png_header(60000, 60000), 400, "pixels"),
        ("binary size past the body", f"/v2/models/cls/infer", json.dumps({"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 99}}]}).encode(), 400, "binary_data_size is 99"),
    ]
    for what, path, body, status, message in cases:
        got, _, answer = request(server.url + path, data=body, headers={"Content-Type": "application/json"})
        try:
            error = json.loads(answer)["error"]
        except (ValueError, KeyError, TypeError):
            error = answer[:200]
        check(got == status and message in str(error), f"{what}: {status} naming the problem ({got}: {error})")
    got, headers, _ = request(server.url + "/v1/models/cls/classify", data=b"x" * 3_000_000)
    check(got == 413, f"a body over --max-body-bytes answers 413 ({got})")
    check(request(server.url + "/v2/health/live")[0] == 200, "the server is still live after the bad requests")


def png_header(width, height):
    """A PNG whose header claims width × height, with no pixel data: decoding it would need gigabytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))


def batching_checks(cli):
    jpeg = read_file(PHOTOS[0])
    with Server(cli, "--max-batch-size", "8", "--max-queue-delay-ms", "50") as server:
        single = request(f"{server.url}/v1/models/cls/classify?top_k=5", data=jpeg)[2]
        before = batch_counts(server)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda _: request(f"{server.url}/v1/models/cls/classify?top_k=5", data=jpeg), range(16)))
        after = batch_counts(server)
        batches, images = after[0] - before[0], after[1] - before[1]
        check(all(a[0] == 200 for a in answers) and images == 16, f"16 concurrent requests all answered ({images:.0f} images computed)")
        check(batches < 16, f"concurrent requests share batches: {batches:.0f} forwards for 16 requests (vitmsn_batch_size in /metrics)")
        check(all(a[2] == single for a in answers), "batched results equal the unbatched one, byte for byte")


def batch_counts(server):
    text = request(server.url + "/metrics")[2].decode()
    def value(name):
        match = re.search(rf'^{name}{{model="cls"}} ([0-9.e+]+)$', text, re.M)
        return float(match.group(1)) if match else 0.0
    return value("vitmsn_batch_size_images_count"), value("vitmsn_batch_size_images_sum")


def stalled_upload(server):
    """A request whose body is still on its way: while it is, a forming batch waits for it (up to the delay)."""
    import socket
    upload = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    upload.sendall(b"POST /v1/models/cls/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n\xff\xd8")
    time.sleep(0.2)
    return upload


def overload_checks(cli):
    jpeg = read_file(PHOTOS[0])
    # With an upload under way, a batch waits 1.5 s to fill 64 images, so three requests queue; the queue takes two images.
    with Server(cli, "--max-batch-size", "64", "--max-queue-delay-ms", "1500", "--max-queue", "2") as server:
        upload = stalled_upload(server)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(request, f"{server.url}/v1/models/cls/classify", jpeg) for _ in range(2)]
            time.sleep(0.5)
            status, headers, body = request(f"{server.url}/v1/models/cls/classify", data=jpeg)
            queued = [f.result()[0] for f in futures]
        check(status == 503 and headers.get("Retry-After") == "1", f"a full queue answers 503 with Retry-After ({status}, {headers.get('Retry-After')})")
        check(queued == [200, 200], f"the queued requests are still answered ({queued})")
        upload.close()
    # With an upload under way, a batch waits 2 s to fill; a request times out after 300 ms, before its work starts.
    with Server(cli, "--max-batch-size", "64", "--max-queue-delay-ms", "2000", "--timeout-ms", "300") as server:
        upload = stalled_upload(server)
        started = time.monotonic()
        status, _, body = request(f"{server.url}/v1/models/cls/classify", data=jpeg)
        waited = time.monotonic() - started
        check(status == 504 and waited < 1.5, f"a request past --timeout-ms answers 504 in time ({status} after {waited:.2f} s)")
        time.sleep(2.2)
        count = batch_counts(server)[0]
        check(count == 0, f"its work was dropped: {count:.0f} forwards ran")
        upload.close()
    # Alone (nothing else on its way), a request does not wait for the 2 s delay: waiting could not fill its batch.
    with Server(cli, "--max-batch-size", "64", "--max-queue-delay-ms", "2000") as server:
        request(f"{server.url}/v1/models/cls/classify", data=jpeg)  # warm-up
        started = time.monotonic()
        status = request(f"{server.url}/v1/models/cls/classify", data=jpeg)[0]
        waited = time.monotonic() - started
        check(status == 200 and waited < 1.5, f"a lone request runs at once, not after --max-queue-delay-ms ({status} after {waited:.2f} s)")


def auth_checks(cli):
    with Server(cli, "--api-key", "s3cret") as server:
        check(request(server.url + "/v2/health/live")[0] == 200, "with --api-key, health checks need no key")
        check(request(server.url + "/v2")[0] == 401, "with --api-key, /v2 without a key answers 401")
        check(request(server.url + "/v2", headers={"Authorization": "Bearer wrong!"})[0] == 401, "a wrong key answers 401")
        check(request(server.url + "/metrics", headers={"Authorization": "Bearer s3cret"})[0] == 200, "the right key is let in")
        status, _, body = request(f"{server.url}/v1/models/cls/classify", data=read_file(PHOTOS[0]), headers={"Authorization": "Bearer s3cret"})
        check(status == 200, "an authorised classify answers 200")


def shutdown_checks(cli):
    jpeg = read_file(PHOTOS[0])
    server = Server(cli, "--max-batch-size", "64", "--max-queue-delay-ms", "1500", "--log-format", "json", "--idle-timeout-s", "1")
    import socket
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    idle.sendall(b"POST /v1/models/cls/classify HTTP/1.1\r\nHost: x\r\n")  # and then nothing
    started = time.monotonic()
    try:
        closed = idle.recv(1024) == b""
    except (ConnectionResetError, socket.timeout):
        closed = False
    check(closed and time.monotonic() - started < 5, f"an idle client is cut off after --idle-timeout-s ({time.monotonic() - started:.1f} s)")
    idle.close()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        inflight = pool.submit(request, f"{server.url}/v1/models/cls/classify", jpeg)
        time.sleep(0.4)
        code = server.stop(timeout=20)
        status = inflight.result(timeout=20)[0]
    check(status == 200, f"SIGTERM lets the request in flight finish ({status})")
    check(code == 0, f"and the server exits 0 ({code})")
    server.log.seek(0)
    log = server.log.read().decode()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    check(any("hb.request.id" in line and "/classify" in line["message"] for line in lines) and "\xff\xd8" not in log,
          f"--log-format json: one JSON object per line with the request id, and no request body ({len(lines)} lines)")


def schemathesis_checks(server, seconds):
    command = [os.path.join(os.path.dirname(sys.executable), "schemathesis"), "run", server.url + "/openapi.json",
               "--checks", "not_a_server_error", "--max-examples", "25", "--request-timeout", "10", "--max-failures", "5"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds)
        tail = "\n".join(result.stdout.strip().splitlines()[-6:])
        check(result.returncode == 0, f"schemathesis: no 5xx and no crash\n{tail}")
    except subprocess.TimeoutExpired:
        check(False, f"schemathesis finished within {seconds} s")
    check(request(server.url + "/v2/health/live")[0] == 200, "the server is live after schemathesis")


def soak(cli, total, seconds):
    """`total` requests from 8 keep-alive clients: half v2 binary pixel_values, three in eight image uploads,
    one in eight bad; resident memory after a warm-up against after the soak."""
    jpeg = read_file(PHOTOS[1])  # 160 × 120: the soak is about the server, not the decoder
    bad = [b"garbage", jpeg[:300], png_header(60000, 60000)]
    pixels = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype("<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "pixel_values", "shape": [1, 3, 16, 16], "datatype": "FP32", "parameters": {"binary_data_size": len(pixels)}}],
                       "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    infer_headers = {"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"}
    with Server(cli, "--max-batch-size", "8", "--max-queue-delay-ms", "2", "--max-queue", "512") as server:
        def worker(args):
            start, count, deadline = args
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            statuses = {}
            for i in range(start, start + count):
                if time.monotonic() > deadline:
                    break
                if i % 8 == 7:
                    connection.request("POST", "/v1/models/cls/classify", body=bad[i % len(bad)])
                elif i % 2 == 0:
                    connection.request("POST", "/v2/models/cls/infer", body=head + pixels, headers=infer_headers)
                else:
                    connection.request("POST", "/v1/models/cls/classify", body=jpeg)
                response = connection.getresponse()
                response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            connection.close()
            return statuses

        def run(count, deadline):
            per = count // 8
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                merged = {}
                for statuses in pool.map(worker, [(k * per, per, deadline) for k in range(8)]):
                    for key, value in statuses.items():
                        merged[key] = merged.get(key, 0) + value
            return merged

        warm = run(min(10_000, total // 10), time.monotonic() + seconds)
        warm_rss = server.rss_kib()
        started = time.monotonic()
        statuses = run(total, started + seconds)
        elapsed = time.monotonic() - started
        after_rss = server.rss_kib()
        answered = sum(statuses.values())
        check(set(statuses) <= {200, 400} and statuses.get(200, 0) > 0, f"soak: only 200 and 400 answers ({statuses}; warm-up {warm})")
        check(answered >= total * 0.99, f"soak: {answered} of {total} requests within {seconds:.0f} s: {elapsed:.0f} s ({answered / elapsed:.0f}/s)")
        growth = (after_rss - warm_rss) / warm_rss
        check(growth <= 0.05, f"soak: resident memory {warm_rss / 1024:.1f} MiB after warm-up, {after_rss / 1024:.1f} MiB after ({growth * 100:+.1f} %)")
        check(server.stop() == 0, "soak: the server exits 0")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cli")
    parser.add_argument("--soak", type=int, default=100_000)
    parser.add_argument("--soak-seconds", type=float, default=420)
    args = parser.parse_args()
    with Server(args.cli, "--max-body-bytes", "2000000") as server:
        protocol_checks(args.cli, server)
        bad_input_checks(server)
        schemathesis_checks(server, seconds=240)
    batching_checks(args.cli)
    overload_checks(args.cli)
    auth_checks(args.cli)
    shutdown_checks(args.cli)
    if args.soak:
        soak(args.cli, args.soak, args.soak_seconds)
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("all server checks passed")


if __name__ == "__main__":
    main()
