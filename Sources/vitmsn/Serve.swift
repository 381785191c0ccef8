import ArgumentParser
import Foundation
import Logging
import ViTMSN
import ViTServe
import ViTTrain

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve models over HTTP: the Open Inference Protocol (KServe v2, tritonclient), /v1 classify and embed, /metrics.",
        discussion: "Binds to loopback unless --host says otherwise. SIGTERM or SIGINT stops accepting, finishes the requests in flight and exits 0."
    )

    @Option(help: "NAME=DIR or NAME=ORG/ID (a model directory, or a model id in the Hugging Face cache); repeat for several models.")
    var model: [String]
    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port (0: any free one; the chosen port is printed).") var port = 8000
    @Option(help: "Most images per forward pass.") var maxBatchSize = 8
    @Option(help: "Milliseconds a batch may wait to fill.") var maxQueueDelayMs = 5.0
    @Option(help: "Images queued per model beyond which requests get 503.") var maxQueue = 64
    @Option(help: "Milliseconds a queued request may wait for its result (504 after; work not started is dropped).") var timeoutMs = 30_000.0
    @Option(help: "Seconds a connection may stay idle.") var idleTimeoutS = 60.0
    @Option(help: "Largest request body in bytes (413 beyond).") var maxBodyBytes = 20_000_000
    @Option(help: "Require 'Authorization: Bearer KEY' on every endpoint but the health checks (or set VITMSN_API_KEY).") var apiKey: String?
    @Option(help: "Embedding pooling: cls or mean.") var pooling = "cls"
    @Option(help: "Log format: text or json.") var logFormat = "text"
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var threading: ThreadOptions

    func validate() throws {
        guard !model.isEmpty else { throw ValidationError("give at least one --model NAME=DIR") }
        for entry in model where !entry.contains("=") { throw ValidationError("--model takes NAME=DIR or NAME=ID, got '\(entry)'") }
        guard maxBatchSize > 0, maxQueue > 0, maxQueueDelayMs >= 0, timeoutMs > 0, idleTimeoutS > 0, maxBodyBytes > 0 else {
            throw ValidationError("--max-batch-size, --max-queue, --timeout-ms, --idle-timeout-s and --max-body-bytes must be positive")
        }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0–65535") }
        guard Pooling(rawValue: pooling) != nil else { throw ValidationError("--pooling must be cls or mean") }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format must be text or json") }
    }

    func run() async throws {
        ProcessSettings.keepFreedMemoryInHeap() // every forward reuses the same activation blocks instead of faulting in fresh pages
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in json ? JSONLogHandler(label: label) as LogHandler : StreamLogHandler.standardError(label: label) }
        let logger = Logger(label: "vitmsn.serve")
        var names = Set<String>()
        let models = try model.map { entry in
            let (name, reference) = (String(entry.prefix { $0 != "=" }), String(entry.drop { $0 != "=" }.dropFirst()))
            guard !name.isEmpty, names.insert(name).inserted else { throw CLIError("--model '\(entry)': each model needs its own non-empty name") }
            return try ServedModel(name: name, model: reference, precision: precision.dtype, parallelism: threading.parallelism, pooling: Pooling(rawValue: pooling)!) {
                logger.warning("\($0)")
            }
        }
        var settings = ServerSettings()
        (settings.host, settings.port, settings.maxBatchSize, settings.maxQueue) = (host, port, maxBatchSize, maxQueue)
        (settings.maxQueueDelay, settings.timeout, settings.idleTimeout) = (maxQueueDelayMs / 1000, timeoutMs / 1000, idleTimeoutS)
        settings.maxBodyBytes = maxBodyBytes
        settings.apiKey = apiKey ?? ProcessInfo.processInfo.environment["VITMSN_API_KEY"]
        let server = ModelServer(models: models, settings: settings, logger: logger)
        try await server.run { [host] port in
            FileHandle.standardOutput.write(Data("vitmsn serve: listening on http://\(host):\(port)\n".utf8))
        }
    }
}
