import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import ViTIO

/// Fetches a model into the Hugging Face cache with the Hub's file scheme (`{endpoint}/{repo}/resolve/
/// {revision}/{file}`), as huggingface_hub does: a HEAD that does not follow redirects gives the commit,
/// ETag and size; the body goes to `blobs/{etag}.incomplete` (resumed with a Range request when a partial
/// one exists), is checked against the size and, for LFS files, the SHA-256 the ETag names, is renamed to
/// `blobs/{etag}`, and `snapshots/{commit}/{file}` links to it. `refs/{revision}` is written last.
public struct HubDownloader {
    public let cache: HubCache
    public let endpoint: String
    let token: String?
    let offline: Bool
    /// Seconds without data before a request fails, and the window of the minimum rate (1 KB/s) a download
    /// must keep (`HF_HUB_DOWNLOAD_TIMEOUT`, as huggingface_hub names it; 60 by default).
    let timeout: TimeInterval

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        cache = HubCache(environment: environment)
        endpoint = (environment["HF_ENDPOINT"] ?? "https://huggingface.co").trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        token = environment["HF_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        offline = ["1", "ON", "YES", "TRUE"].contains(environment["HF_HUB_OFFLINE"]?.uppercased() ?? "")
        timeout = environment["HF_HUB_DOWNLOAD_TIMEOUT"].flatMap(Double.init).flatMap { $0 > 0 && $0.isFinite ? $0 : nil } ?? 60
    }

    public struct Progress {
        public let file: String
        public let received: Int
        public let total: Int
    }

    /// Downloads config, preprocessor config and the weights (safetensors preferred, then sharded, then
    /// PyTorch pickles); returns the snapshot folder.
    @discardableResult
    public func download(_ modelID: String, revision: String = "main", progress: (Progress) -> Void = { _ in }) throws -> String {
        guard HubCache.isModelID(modelID) else { throw CheckpointError(modelID, "not a model id (expected org/name)") }
        guard !offline else { throw CheckpointError(modelID, "HF_HUB_OFFLINE is set: not downloading") }
        try HubCache.checkRevision(revision, of: modelID)  // before any path or URL is built from it
        var commit = ""
        func fetch(_ file: String, required: Bool) throws -> String? {
            guard let (path, fileCommit) = try fetchFile(modelID, revision: revision, file: file, progress: progress) else {
                if required { throw CheckpointError(modelID, "\(file) does not exist at revision \(revision)") }
                return nil
            }
            commit = fileCommit
            return path
        }
        _ = try fetch("config.json", required: true)
        _ = try fetch("preprocessor_config.json", required: false)
        var weights = false
        for (file, index) in [("model.safetensors", false), ("model.safetensors.index.json", true), ("pytorch_model.bin", false), ("pytorch_model.bin.index.json", true)] {
            guard let path = try fetch(file, required: false) else { continue }
            if index {
                let data = try Data(contentsOf: URL(fileURLWithPath: path))
                guard let map = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["weight_map"] as? [String: String] else {
                    throw CheckpointError(modelID, "\(file) has no weight_map")
                }
                for shard in Set(map.values).sorted() {
                    guard !shard.contains("/"), shard != ".." else { throw CheckpointError(modelID, "\(file) names '\(shard)', not a file name") }
                    _ = try fetch(shard, required: true)
                }
            }
            weights = true
            break
        }
        guard weights else { throw CheckpointError(modelID, "no model.safetensors, pytorch_model.bin or shard index at revision \(revision)") }
        let repository = cache.repositoryFolder(modelID)
        if revision != commit {
            let ref = repository + "/refs/" + revision
            try FileManager.default.createDirectory(atPath: (ref as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try writeAtomically(Data(commit.utf8), to: ref)
        }
        return repository + "/snapshots/" + commit
    }

    /// One file into the cache; nil when the Hub says it does not exist.
    func fetchFile(_ modelID: String, revision: String, file: String, progress: (Progress) -> Void) throws -> (String, String)? {
        // One path segment, as huggingface_hub quotes it (refs/pr/1 → refs%2Fpr%2F1).
        let segment = revision.addingPercentEncoding(withAllowedCharacters: CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")) ?? revision
        let url = "\(endpoint)/\(modelID)/resolve/\(segment)/\(file)"
        let head = try HTTP.request(url, method: "HEAD", token: token, timeout: timeout, followRedirects: false)
        switch head.status {
        case 200, 300..<400: break
        case 404: return nil
        case 401, 403: throw CheckpointError(url, "HTTP \(head.status): the model is gated or private; set HF_TOKEN")
        default: throw CheckpointError(url, "HTTP \(head.status)")
        }
        guard let commit = head.header("X-Repo-Commit"), commit.allSatisfy({ $0.isHexDigit }), !commit.isEmpty else {
            throw CheckpointError(url, "the server sent no X-Repo-Commit header")
        }
        guard let rawEtag = head.header("X-Linked-Etag") ?? head.header("ETag") else { throw CheckpointError(url, "the server sent no ETag") }
        let etag = rawEtag.replacingOccurrences(of: "W/", with: "").trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        guard !etag.isEmpty, etag.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else { throw CheckpointError(url, "unusable ETag '\(rawEtag)'") }
        guard let size = (head.header("X-Linked-Size") ?? head.header("Content-Length")).flatMap(Int.init) else {
            throw CheckpointError(url, "the server sent no size")
        }
        let repository = cache.repositoryFolder(modelID)
        let blob = repository + "/blobs/" + etag
        let snapshot = repository + "/snapshots/" + commit
        try FileManager.default.createDirectory(atPath: repository + "/blobs", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: snapshot, withIntermediateDirectories: true)
        if !FileManager.default.fileExists(atPath: blob) {
            let source = (300..<400).contains(head.status) ? head.header("Location").map { absolute($0, relativeTo: url) } ?? url : url
            let partial = blob + ".incomplete"
            // The token goes to the Hub only, not to the CDN it redirects to (as huggingface_hub drops it).
            let sourceToken = HTTP.sameOrigin(source, url) ? token : nil
            try HTTP.download(source, to: partial, token: sourceToken, timeout: timeout, expectedSize: size) { progress(Progress(file: file, received: $0, total: size)) }
            let received = (try FileManager.default.attributesOfItem(atPath: partial)[.size] as? Int) ?? -1
            guard received == size else { throw CheckpointError(url, "received \(received) bytes, the server announced \(size)") }
            if etag.count == 64, etag.allSatisfy(\.isHexDigit) {
                let digest = try FileDigest.sha256Hex(ofFile: partial)
                guard digest == etag.lowercased() else {
                    try? FileManager.default.removeItem(atPath: partial)
                    throw CheckpointError(url, "SHA-256 \(digest) does not match the ETag \(etag); the partial download was removed")
                }
            }
            guard rename(partial, blob) == 0 else { throw CheckpointError(blob, "cannot move the download into place") }
        }
        // snapshots/{commit}/{file} → ../../blobs/{etag}, replaced in one step.
        let link = snapshot + "/" + file
        let temporary = link + ".tmp-link"
        try? FileManager.default.removeItem(atPath: temporary)
        try FileManager.default.createSymbolicLink(atPath: temporary, withDestinationPath: "../../blobs/" + etag)
        guard rename(temporary, link) == 0 else { throw CheckpointError(link, "cannot link the snapshot file") }
        return (link, commit)
    }

    private func absolute(_ location: String, relativeTo url: String) -> String {
        URL(string: location, relativeTo: URL(string: url))?.absoluteString ?? location
    }
}

/// Blocking HTTP over URLSession, enough for the Hub's scheme.
enum HTTP {
    struct Response {
        let status: Int
        let headers: [String: String]
        func header(_ name: String) -> String? { headers.first { $0.key.caseInsensitiveCompare(name) == .orderedSame }?.value }
    }

    private final class Delegate: NSObject, URLSessionDataDelegate, @unchecked Sendable {
        let followRedirects: Bool
        var response: HTTPURLResponse?
        var error: Error?
        var sink: ((Data, Int) throws -> Void)?  // a body chunk and the status it came with
        let done = DispatchSemaphore(value: 0)

        init(followRedirects: Bool) { self.followRedirects = followRedirects }

        func urlSession(_ session: URLSession, task: URLSessionTask, willPerformHTTPRedirection response: HTTPURLResponse,
                        newRequest request: URLRequest, completionHandler: @escaping (URLRequest?) -> Void) {
            var next = request
            if let from = task.originalRequest?.url?.absoluteString, let to = request.url?.absoluteString, !HTTP.sameOrigin(from, to) {
                next.setValue(nil, forHTTPHeaderField: "Authorization")
            }
            completionHandler(followRedirects ? next : nil)
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive response: URLResponse,
                        completionHandler: @escaping (URLSession.ResponseDisposition) -> Void) {
            self.response = response as? HTTPURLResponse
            completionHandler(.allow)
        }

        func urlSession(_ session: URLSession, dataTask: URLSessionDataTask, didReceive data: Data) {
            do { try sink?(data, response?.statusCode ?? 0) } catch {
                self.error = error
                dataTask.cancel()
            }
        }

        func urlSession(_ session: URLSession, task: URLSessionTask, didCompleteWithError error: Error?) {
            if self.error == nil { self.error = error }
            if response == nil { response = task.response as? HTTPURLResponse }
            done.signal()
        }
    }

    private static func perform(_ request: URLRequest, followRedirects: Bool, sink: ((Data, Int) throws -> Void)?) throws -> Response {
        let delegate = Delegate(followRedirects: followRedirects)
        delegate.sink = sink
        let session = URLSession(configuration: .ephemeral, delegate: delegate, delegateQueue: nil)
        defer { session.finishTasksAndInvalidate() }
        session.dataTask(with: request).resume()
        delegate.done.wait()
        delegate.sink = nil // the session outlives this call; the sink must not
        if let error = delegate.error {
            let url = request.url?.absoluteString ?? ""
            if let checkpointError = error as? CheckpointError { throw checkpointError }
            if (error as? URLError)?.code == .timedOut || (error as NSError).code == NSURLErrorTimedOut {
                throw CheckpointError(url, "the server sent nothing for \(Int(request.timeoutInterval)) s; stopped (run the same command again to resume)")
            }
            throw CheckpointError(url, "request failed: \(error.localizedDescription)")
        }
        guard let response = delegate.response else { throw CheckpointError(request.url?.absoluteString ?? "", "no HTTP response") }
        let headers = Dictionary(response.allHeaderFields.compactMap { key, value in (key as? String).map { ($0, "\(value)") } }, uniquingKeysWith: { a, _ in a })
        return Response(status: response.statusCode, headers: headers)
    }

    /// Whether two URLs share scheme, host and port.
    static func sameOrigin(_ a: String, _ b: String) -> Bool {
        guard let x = URLComponents(string: a), let y = URLComponents(string: b) else { return false }
        return x.scheme?.lowercased() == y.scheme?.lowercased() && x.host?.lowercased() == y.host?.lowercased() && x.port == y.port
    }

    private static func makeRequest(_ url: String, method: String, token: String?, timeout: TimeInterval) throws -> URLRequest {
        guard let parsed = URL(string: url) else { throw CheckpointError(url, "not a URL") }
        var request = URLRequest(url: parsed, timeoutInterval: timeout)
        request.httpMethod = method
        request.setValue("identity", forHTTPHeaderField: "Accept-Encoding")
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        return request
    }

    static func request(_ url: String, method: String, token: String?, timeout: TimeInterval, followRedirects: Bool) throws -> Response {
        try perform(try makeRequest(url, method: method, token: token, timeout: timeout), followRedirects: followRedirects, sink: nil)
    }

    /// Appends the body to `path`, resuming from its current size with a Range request. When the server ignores
    /// the range (200), the file is emptied before its first byte is written, so that a kill mid-body never
    /// leaves old bytes followed by the file's start.
    static func download(_ url: String, to path: String, token: String?, timeout: TimeInterval, expectedSize: Int, progress: (Int) -> Void) throws {
        if !FileManager.default.fileExists(atPath: path), !FileManager.default.createFile(atPath: path, contents: nil) {
            throw CheckpointError(path, "cannot create")
        }
        var have = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        if have > expectedSize { try Data().write(to: URL(fileURLWithPath: path)); have = 0 }
        guard have < expectedSize else { return }
        var request = try makeRequest(url, method: "GET", token: token, timeout: timeout)
        if have > 0 { request.setValue("bytes=\(have)-", forHTTPHeaderField: "Range") }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw CheckpointError(path, "cannot write") }
        defer { try? handle.close() }
        try handle.seekToEnd()
        var (received, body, restarted) = (have, 0, false)
        var (windowStart, windowBytes) = (Date(), 0)  // a trickle of bytes would otherwise keep it alive for ever
        let response = try withoutActuallyEscaping(progress) { progress in
            let report = UncheckedCallback(progress)
            return try perform(request, followRedirects: true) { data, status in
                if status == 200, received > 0, body == 0 {
                    try handle.truncate(atOffset: 0)
                    (received, restarted) = (0, true)
                }
                // No response body may be longer than the whole file (a server that ignores the range sends the
                // file from its start); a longer one is cut off here instead of filling the disk.
                guard body + data.count <= expectedSize else {
                    throw CheckpointError(url, "the server sent more than the \(expectedSize) bytes it announced; stopped")
                }
                try handle.write(contentsOf: data)
                (received, body, windowBytes) = (received + data.count, body + data.count, windowBytes + data.count)
                if Date().timeIntervalSince(windowStart) >= timeout {
                    guard Double(windowBytes) >= 1024 * timeout else {
                        throw CheckpointError(url, "slower than 1 KB/s over \(Int(timeout)) s (\(windowBytes) bytes); stopped (run the same command again to resume)")
                    }
                    (windowStart, windowBytes) = (Date(), 0)
                }
                report.call(received)
            }
        }
        switch response.status {
        case 206 where have > 0, 200 where have == 0 || restarted: return
        case 200: // the range was ignored and no body came: start again cleanly
            try Data().write(to: URL(fileURLWithPath: path))
            try download(url, to: path, token: token, timeout: timeout, expectedSize: expectedSize, progress: progress)
        default:
            throw CheckpointError(url, "HTTP \(response.status) while downloading")
        }
    }
}

/// The progress callback, called from URLSession's delegate queue while the caller waits for completion.
private struct UncheckedCallback: @unchecked Sendable {
    let body: (Int) -> Void
    init(_ body: @escaping (Int) -> Void) { self.body = body }
    func call(_ value: Int) { body(value) }
}

/// SHA-256 through swift-crypto, to check LFS files against the digest their ETag names.
enum FileDigest {
    static func sha256Hex(ofFile path: String) throws -> String {
        let file = try MappedFile(path: path)
        return sha256Hex(of: file.bytes)
    }

    static func sha256Hex(of data: UnsafeRawBufferPointer) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }
}
