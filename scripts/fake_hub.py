"""A stand-in for the Hugging Face Hub's file endpoints, on 127.0.0.1, for testing `vitmsn download`.

Serves one model directory as REPO at any revision, as the Hub does: HEAD/GET /{repo}/resolve/{revision}/{file}
answers with X-Repo-Commit and an ETag; LFS files (*.safetensors, *.bin) redirect (302) to /lfs/{sha256}
with X-Linked-Etag / X-Linked-Size, which supports Range requests (206); a missing file is 404 with
X-Error-Code: EntryNotFound. --token makes every request need "Authorization: Bearer TOKEN";
--cut-first-lfs ends the first LFS body halfway, to test resuming; --cdn-host HOST redirects LFS files to
HOST (another origin, as the Hub's CDN is) where a request carrying Authorization is refused (400);
--overlong-lfs sends LFS bodies without a length and keeps writing past their end; --trickle-lfs sends them
at 500 bytes a second. Prints the port, then serves until
stdin closes (the test that started it ends) or --seconds pass. Python standard library only.
"""
import argparse
import hashlib
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--token")
    parser.add_argument("--cut-first-lfs", action="store_true")
    parser.add_argument("--cdn-host")
    parser.add_argument("--overlong-lfs", action="store_true")
    parser.add_argument("--trickle-lfs", action="store_true")
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    files = {p.name: p.read_bytes() for p in args.root.iterdir() if p.is_file()}
    lfs = {hashlib.sha256(data).hexdigest(): data for name, data in files.items() if name.endswith((".safetensors", ".bin"))}
    state = {"cut": args.cut_first_lfs}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def reply(self, status, headers, body=b""):
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, str(value))
            self.end_headers()
            if self.command == "GET" and body:
                self.wfile.write(body)

        def handle_request(self):
            path = self.path.split("?")[0]
            if args.cdn_host and path.startswith("/lfs/") and "Authorization" in self.headers:
                return self.reply(400, {"Content-Length": 0, "X-Error-Code": "TokenSentToAnotherOrigin"})
            if args.token and not (args.cdn_host and path.startswith("/lfs/")) and self.headers.get("Authorization") != f"Bearer {args.token}":
                return self.reply(401, {"Content-Length": 0, "X-Error-Code": "GatedRepo"})
            if path.startswith("/lfs/") and args.overlong_lfs and self.command == "GET":
                self.send_response(200)  # no Content-Length: the body ends when the connection does
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(lfs.get(path[5:], b""))
                    for _ in range(2000):  # then 2 GB of more, unless the client hangs up
                        self.wfile.write(b"\0" * (1 << 20))
                except OSError:
                    pass
                self.close_connection = True
                return
            if path.startswith("/lfs/") and args.trickle_lfs and self.command == "GET":
                data = lfs.get(path[5:], b"")
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    for start in range(0, len(data), 100):
                        self.wfile.write(data[start:start + 100])
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass
                return
            if path.startswith("/lfs/"):
                data = lfs.get(path[5:])
                if data is None:
                    return self.reply(404, {"Content-Length": 0})
                start = 0
                if self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].split("-")[0])
                body = data[start:]
                headers = {"Content-Length": len(body), "ETag": f'"{path[5:]}"', "Accept-Ranges": "bytes"}
                if start:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                if self.command == "GET" and state["cut"] and not start:
                    state["cut"] = False  # send half, then drop the connection
                    self.send_response(200)
                    for key, value in headers.items():
                        self.send_header(key, str(value))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.close()
                    return
                return self.reply(206 if start else 200, headers, body)
            prefix = f"/{args.repo}/resolve/"
            if not path.startswith(prefix) or path[len(prefix):].count("/") != 1:
                return self.reply(404, {"Content-Length": 0, "X-Error-Code": "RepoNotFound"})
            name = path[len(prefix):].split("/")[1]
            data = files.get(name)
            if data is None:
                return self.reply(404, {"Content-Length": 0, "X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
            if name.endswith((".safetensors", ".bin")):
                digest = hashlib.sha256(data).hexdigest()
                location = f"http://{args.cdn_host}:{self.server.server_address[1]}/lfs/{digest}" if args.cdn_host else f"/lfs/{digest}"
                return self.reply(302, {"Location": location, "X-Repo-Commit": COMMIT, "X-Linked-Etag": f'"{digest}"',
                                        "X-Linked-Size": len(data), "Content-Length": 0})
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            return self.reply(200, {"Content-Length": len(data), "ETag": f'"{etag}"', "X-Repo-Commit": COMMIT}, data)

        do_GET = handle_request
        do_HEAD = handle_request

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait(args.seconds)
    server.shutdown()


if __name__ == "__main__":
    main()
