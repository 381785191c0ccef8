import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import ViTMSN

/// How `vitmsn serve` runs.
public struct ServerSettings: Sendable {
    public var host = "127.0.0.1"
    public var port = 8000
    public var maxBatchSize = 8
    public var maxQueueDelay = 0.005     // seconds a batch may wait to fill
    public var maxQueue = 64             // images queued per model before requests get 503
    public var timeout = 30.0            // seconds a queued request may wait for its result
    public var idleTimeout = 60.0        // seconds a connection may stay silent
    public var maxBodyBytes = 20_000_000
    public var maxImagePixels = ImageDecoder.defaultMaxPixels
    public var apiKey: String?

    public init() {}
}

/// The model server: the Open Inference Protocol (KServe v2) with Triton's binary tensor extension, simple
/// classify and embed endpoints, Prometheus metrics and OpenAPI, over Hummingbird; one dynamic batcher per model.
public final class ModelServer: Sendable {
    let settings: ServerSettings
    let logger: Logger
    let metrics = ServerMetrics()
    let batchers: [String: DynamicBatcher]
    let reading: ImageReading

    public init(models: [ServedModel], settings: ServerSettings, logger: Logger) {
        (self.settings, self.logger) = (settings, logger)
        let batching = DynamicBatcher.Settings(maxBatchSize: settings.maxBatchSize, maxQueueDelay: settings.maxQueueDelay, maxQueue: settings.maxQueue)
        let metrics = metrics
        batchers = Dictionary(uniqueKeysWithValues: models.map { ($0.name, DynamicBatcher(model: $0, settings: batching, metrics: metrics.model($0.name))) })
        reading = ImageReading(maxPixels: settings.maxImagePixels)
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, finishes the requests in flight and returns.
    /// `onListening` gets the bound port (useful with port 0).
    public func run(onListening: @escaping @Sendable (Int) -> Void = { _ in }) async throws {
        let application = Application(
            router: makeRouter(),
            server: .http1(configuration: .init(idleTimeout: .milliseconds(Int64(settings.idleTimeout * 1000)))),
            configuration: .init(address: .hostname(settings.host, port: settings.port), serverName: "vitmsn"),
            onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [BatcherShutdown(batchers: Array(batchers.values)), application], // stopped last to first
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    func batcher(_ name: String) throws -> DynamicBatcher {
        guard let batcher = batchers[name] else {
            throw RequestError(404, "no model '\(name)'; this server has \(batchers.keys.sorted())")
        }
        return batcher
    }
}

/// Stops the batchers once the HTTP server has drained: queued work finishes, then the worker threads exit.
private struct BatcherShutdown: Service {
    let batchers: [DynamicBatcher]

    func run() async throws {
        try? await gracefulShutdown()
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                for batcher in batchers { batcher.stop() }
                continuation.resume()
            }
        }
    }
}

// MARK: routes

extension ModelServer {
    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: RequestMiddleware(server: self))
        router.get("/v2/health/live") { _, _ in try Self.json(["live": true]) }
        router.get("/v2/health/ready") { _, _ in try Self.json(["ready": true]) }
        router.get("/v2") { _, _ in
            try Self.json(["name": "vitmsn", "version": "1", "extensions": ["binary_tensor_data", "classification"]] as [String: Any])
        }
        for versioned in ["", "/versions/:version"] {
            router.get("/v2/models/:name\(versioned)") { _, context in try Self.json(self.metadata(self.model(context))) }
            router.get("/v2/models/:name\(versioned)/ready") { _, context in
                _ = try self.model(context)
                return try Self.json(["name": try context.parameters.require("name"), "ready": true] as [String: Any])
            }
            router.post("/v2/models/:name\(versioned)/infer") { request, context in try await self.infer(request, context) }
        }
        router.post("/v1/models/:name/classify") { request, context in try await self.classify(request, context) }
        router.post("/v1/models/:name/embed") { request, context in try await self.embed(request, context) }
        router.get("/openapi.json") { _, _ in Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: openAPIDocument))) }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: self.metrics.text)))
        }
        return router
    }

    private func model(_ context: BasicRequestContext) throws -> DynamicBatcher {
        if let version = context.parameters.get("version"), version != "1" {
            throw RequestError(404, "model '\(context.parameters.get("name") ?? "")' has version 1 only, not '\(version)'")
        }
        return try batcher(try context.parameters.require("name"))
    }

    private func metadata(_ batcher: DynamicBatcher) -> [String: Any] {
        let model = batcher.model
        func tensor(_ name: String, _ datatype: String, _ shape: [Int]) -> [String: Any] { ["name": name, "datatype": datatype, "shape": shape] }
        return [
            "name": model.name, "versions": ["1"], "platform": "vitmsn",
            "inputs": [tensor("pixel_values", "FP32", [-1] + model.inputShape), tensor("images", "BYTES", [-1])],
            "outputs": model.outputs.map { tensor($0.rawValue, "FP32", [-1] + model.shape(of: $0)) },
        ]
    }

    /// `POST /v2/models/{name}/infer`.
    private func infer(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let batcher = try model(context)
        let arrival = batcher.arrive()
        defer { arrival.leave() }
        let headerLength = try request.headers[HTTPField.Name("Inference-Header-Content-Length")!].map { text in
            guard let length = Int(text) else { throw RequestError(400, "Inference-Header-Content-Length '\(text)' is not a number") }
            return length
        }
        let body = try await readBody(request)
        let parsed = try InferenceProtocol.parse(body, headerLength: headerLength, model: batcher.model, maxImages: settings.maxQueue)
        let pixels: [Tensor]
        switch parsed.input {
        case .pixelValues(let tensors): pixels = tensors
        case .images(let files): pixels = try await preprocess(files.enumerated().map { ImageInput.encoded($1, name: "images[\($0)]") }, batcher)
        }
        let results = try await submit(pixels, outputs: Set(parsed.outputs.map(\.name)), to: batcher, arrival: arrival)
        let (responseBody, jsonLength) = try InferenceProtocol.response(parsed, model: batcher.model, results: results)
        var headers: HTTPFields = [.contentType: jsonLength == nil ? "application/json" : "application/octet-stream"]
        if let jsonLength { headers[HTTPField.Name("Inference-Header-Content-Length")!] = String(jsonLength) }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(data: responseBody)))
    }

    /// `POST /v1/models/{name}/classify?top_k=5`: an image file (raw or multipart) → `[{"label", "score"}]`.
    private func classify(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let batcher = try model(context)
        guard batcher.model.classifier != nil else { throw RequestError(400, "model '\(batcher.model.name)' has no classification head; use /embed") }
        let arrival = batcher.arrive()
        defer { arrival.leave() }
        let topK = try request.uri.queryParameters.get("top_k").map { text in
            guard let k = Int(text), k > 0 else { throw RequestError(400, "top_k must be a positive integer, not '\(text)'") }
            return k
        } ?? 5
        let pixels = try await preprocess([.encoded(try await imageFile(request), name: "the image")], batcher)
        let probabilities = try await submit(pixels, outputs: [.probabilities], to: batcher, arrival: arrival)[0][.probabilities]!
        return try Self.json(Prediction.ranked(probabilities, topK: topK, config: batcher.model.config))
    }

    /// `POST /v1/models/{name}/embed?normalize=true`: an image file → its pooled embedding, as JSON floats or,
    /// with `Accept: application/octet-stream`, little-endian float32.
    private func embed(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let batcher = try model(context)
        let arrival = batcher.arrive()
        defer { arrival.leave() }
        let normalize = try request.uri.queryParameters.get("normalize").map { text in
            guard let flag = Bool(text) else { throw RequestError(400, "normalize must be true or false, not '\(text)'") }
            return flag
        } ?? false
        let pixels = try await preprocess([.encoded(try await imageFile(request), name: "the image")], batcher)
        var vector = try await submit(pixels, outputs: [.embedding], to: batcher, arrival: arrival)[0][.embedding]!
        if normalize { vector = ImageFeatureExtractionPipeline.normalized(vector) }
        if request.headers[.accept]?.contains("application/octet-stream") == true {
            return Response(status: .ok, headers: [.contentType: "application/octet-stream"],
                            body: .init(byteBuffer: ByteBuffer(data: vector.withUnsafeBufferPointer { Data(buffer: $0) })))
        }
        return try Self.json(vector)
    }

    // MARK: helpers

    /// The body, refused with 413 past the limit before it is read whole.
    private func readBody(_ request: Request) async throws -> Data {
        if let declared = request.headers[.contentLength].flatMap(Int.init), declared > settings.maxBodyBytes {
            throw RequestError(413, "the body is \(declared) bytes; this server takes at most \(settings.maxBodyBytes)")
        }
        do {
            return Data(buffer: try await request.body.collect(upTo: settings.maxBodyBytes))
        } catch is NIOTooManyBytesError {
            throw RequestError(413, "the body is over \(settings.maxBodyBytes) bytes, the most this server takes")
        }
    }

    /// The image of a simple endpoint's body: the body itself, or the first part of a multipart form.
    private func imageFile(_ request: Request) async throws -> Data {
        try Self.imageFile(body: try await readBody(request), contentType: request.headers[.contentType])
    }

    /// The body itself, or the first non-empty part of a multipart form (fuzzed: fuzz/parsers).
    static func imageFile(body: Data, contentType type: String?) throws -> Data {
        guard let type, type.lowercased().hasPrefix("multipart/form-data") else { return body }
        guard let boundary = type.split(separator: ";").lazy.map({ $0.trimmingCharacters(in: .whitespaces) })
            .first(where: { $0.lowercased().hasPrefix("boundary=") })?.dropFirst(9).trimmingCharacters(in: CharacterSet(charactersIn: "\"")),
            !boundary.isEmpty
        else { throw RequestError(400, "a multipart/form-data body needs a boundary") }
        return try MultipartForm.firstNonEmptyPart(of: body, boundary: boundary)
    }

    /// Decodes and preprocesses off the server's threads; the first bad image fails the request with 400.
    private func preprocess(_ inputs: [ImageInput], _ batcher: DynamicBatcher) async throws -> [Tensor] {
        let started = DispatchTime.now()
        let results = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { [reading] in
                continuation.resume(returning: reading.pixelValues(inputs, processor: batcher.model.processor, channels: batcher.model.config.numChannels))
            }
        }
        batcher.metrics.preprocessSeconds.record(Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9)
        return try results.map { result in
            try result.mapError { RequestError(400, "\($0)") }.get()
        }
    }

    private func submit(_ pixels: [Tensor], outputs: Set<OutputName>, to batcher: DynamicBatcher, arrival: DynamicBatcher.Arrival) async throws -> [ImageOutputs] {
        do {
            return try await batcher.submit(pixels, outputs: outputs, timeout: settings.timeout, arrival: arrival)
        } catch let error as BatchError {
            switch error {
            case .queueFull(let size): throw RequestError(503, "model '\(batcher.model.name)' has \(size) images queued; try again", retryAfterSeconds: 1)
            case .timedOut: throw RequestError(504, "no result within \(settings.timeout) s")
            case .shuttingDown: throw RequestError(503, "the server is shutting down", retryAfterSeconds: 1)
            case .failed(let message): throw RequestError(400, message)
            }
        }
    }

    static func json(_ value: Any) throws -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(data: try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]))))
    }

    static func json<T: Encodable>(_ value: T) throws -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: try sortedJSON(value))))
    }
}

// MARK: middleware

/// Around every request: the API key, the overall timeout, errors as the protocol's `{"error": "…"}`, a log
/// line with the request id (never the body), and the request metrics.
private struct RequestMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let server: ModelServer

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = DispatchTime.now()
        var response: Response
        do {
            try authorize(request)
            response = try await next(request, context)
        } catch {
            response = Self.errorResponse(error)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        let endpoint = context.endpointPath ?? "unmatched"
        server.metrics.recordRequest(endpoint: endpoint, status: Int(response.status.code), seconds: seconds)
        context.logger.info("\(request.method) \(endpoint) \(response.status.code) \(String(format: "%.1f", seconds * 1000)) ms")
        return response
    }

    private func authorize(_ request: Request) throws {
        guard let key = server.settings.apiKey, !request.uri.path.hasPrefix("/v2/health/") else { return }
        let given = request.headers[.authorization].map { Array($0.utf8) } ?? []
        let expected = Array("Bearer \(key)".utf8)
        // Constant time in the key: every byte of the expected value is compared, whatever the given one is.
        var difference = UInt8(given.count == expected.count ? 0 : 1)
        for i in expected.indices { difference |= expected[i] ^ (i < given.count ? given[i] : 0) }
        guard difference == 0 else { throw RequestError(401, "this server needs 'Authorization: Bearer <api key>'") }
    }

    static func errorResponse(_ error: Error) -> Response {
        let status: Int, message: String
        var headers: HTTPFields = [.contentType: "application/json"]
        switch error {
        case let error as RequestError:
            (status, message) = (error.status, error.message)
            if let retry = error.retryAfterSeconds { headers[.retryAfter] = String(retry) }
        case let error as HTTPResponseError:
            (status, message) = (Int(error.status.code), error.status.code == 404 ? "no such endpoint" : error.status.reasonPhrase)
        default:
            (status, message) = (500, "internal error: \(error)")
        }
        let body = (try? JSONSerialization.data(withJSONObject: ["error": message])) ?? Data(#"{"error": "?"}"#.utf8)
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: ByteBuffer(data: body)))
    }
}
