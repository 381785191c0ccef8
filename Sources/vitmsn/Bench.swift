import ArgumentParser
import Foundation
import ViTCore
import ViTHub
import ViTModel
import ViTTrain
import ViTVision

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time the forward pass (median ms per batch, images/s, GFLOP/s), a training step, or image preprocessing."
    )

    @Option(help: "Model directory, or a model id in the Hugging Face cache, to time.") var model: String?
    @Option(help: "Branch, tag or commit of a model id.") var revision: String?
    @Option(help: "Shape preset with random weights: small, base, large, base-4, large-7.") var preset: String?
    @Option(help: "Time decoding + preprocessing of this image file on one core (needs --model for the processor).")
    var preprocess: String?
    @Flag(help: "Time loading the --model directory (validation, CRC checks, mapping) instead of the forward pass.")
    var load = false
    @Flag(help: "Time a training step (forward, backward, AdamW) of a 10-label classifier instead.") var train = false
    @Option(help: "Time an MSN pretraining step (views of the first batch, forward, backward, AdamW, EMA) of this pretraining config instead.") var msn: String?
    @Option(help: "Time the GEMM alone on MxNxK (packed weights, as the forward runs it) or MxNxK:t (op(A) transposed and B packed per call, as the backward's weight gradient runs it); repeatable.")
    var gemm: [String] = []
    @Option(name: .customLong("batch"), help: "Images per batch (default 8; with --msn, the config's batch_size).") var batchOption: Int?
    var batch: Int { batchOption ?? 8 }
    @Option(help: "Seconds of timed runs (after one warm-up run); at least 3 runs are timed.") var seconds = 10.0
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var threading: ThreadOptions
    @Flag(help: "Print one JSON object instead of text.") var json = false

    func run() throws {
        if let preprocess { return try timePreprocessing(preprocess) }
        if load {
            guard let model else { throw CLIError("--load needs --model") }
            let directory = try HubCache().resolve(model, revision: revision)
            let median = try medianSeconds { _ = try AnyViTMSN.load(directory: directory) }
            return print(summary: [("model", directory), ("load_ms", median * 1000)])
        }
        if train { return try timeTrainingStep() }
        if let msn { return try timeMSNStep(msn) }
        if !gemm.isEmpty { return try timeGEMMs() }
        let backbone: ViTMSNModel
        switch (model, preset) {
        // A classifier directory is timed as its backbone on purpose: its unused classifier is no news.
        case (let reference?, nil): backbone = try ViTMSNModel.load(directory: HubCache().resolve(reference, revision: revision))
        case (nil, let name?): backbone = try ViTMSNModel.randomlyInitialized(config: ViTMSNConfig.preset(name), seed: 0)
        default: throw CLIError("give exactly one of --model and --preset")
        }
        backbone.convert(to: precision.dtype)
        backbone.parallelism = threading.parallelism
        let config = backbone.config
        var generator = SeededGenerator(seed: 1)
        let shape = [batch, config.numChannels, config.imageSize.height, config.imageSize.width]
        let pixels = Tensor(shape: shape, scalars: (0..<Tensor.elementCount(shape)).map { _ in generator.normal() })

        let (best, median, p99) = try timedRuns { _ = try backbone.forward(pixelValues: pixels) }
        let gflops = config.forwardFLOPs(height: shape[2], width: shape[3]) * Double(batch) / median / 1e9
        let peak = VectorMath.fmaPeakGFLOPs(threads: backbone.parallelism.threads)
        print(summary: [
            ("batch", batch), ("best_ms", best * 1000), ("median_ms", median * 1000), ("p99_ms", p99 * 1000), ("images_per_s", Double(batch) / median), ("gflops", gflops),
            ("fma_peak_gflops", peak), ("percent_of_peak", 100 * gflops / peak),
            ("threads", backbone.parallelism.threads), ("kernels", backbone.isQuantized ? VectorMath.int8Kernels : VectorMath.instructionSet),
            ("dtype", backbone.isQuantized ? "int8" : precision.dtype.rawValue),
        ])
    }

    /// The GEMM alone on each `--gemm` shape, with the FMA peak of the same threads; with `--dtype int8`,
    /// the int8 product of activations quantised once, against the peak of the int8 kernel's own instructions.
    private func timeGEMMs() throws {
        let parallelism = threading.parallelism
        let int8 = precision.dtype == .int8
        let peak = int8 ? VectorMath.int8PeakGOPs(threads: parallelism.threads) : VectorMath.fmaPeakGFLOPs(threads: parallelism.threads)
        for spec in gemm {
            let parts = spec.split(separator: ":")
            let sizes = parts[0].split(separator: "x").compactMap { Int($0) }
            guard sizes.count == 3, sizes.allSatisfy({ $0 > 0 }), parts.count == 1 || (parts[1] == "t" && !int8) else {
                throw CLIError("--gemm \(spec): expected MxNxK" + (int8 ? "" : " or MxNxK:t"))
            }
            let (m, n, k, transposed) = (sizes[0], sizes[1], sizes[2], parts.count == 2)
            var generator = SeededGenerator(seed: 2)
            let a = (0..<(m * k)).map { _ in generator.normal() }, b = (0..<(k * n)).map { _ in generator.normal() }
            var c = [Float](repeating: 0, count: m * n)
            let (best, median, _) = try a.withUnsafeBufferPointer { a in
                try b.withUnsafeBufferPointer { b in
                    try c.withUnsafeMutableBufferPointer { c in
                        if int8 {
                            let weight = QuantizedMatrix(quantizing: b.baseAddress!, n: n, k: k)
                            let rows = QuantizedRows(a.baseAddress!, rows: m, columns: k, for: [weight], parallelism: parallelism)
                            return try timedRuns {
                                quantizedLinearForward(x: rows, products: [QuantizedProduct(weight: weight, bias: nil, y: c.baseAddress!)], parallelism: parallelism)
                            }
                        }
                        if transposed {
                            return try timedRuns {
                                ViTCore.gemm(transposeA: true, transposeB: false, m: m, n: n, k: k, a: a.baseAddress!, lda: m,
                                             b: b.baseAddress!, ldb: n, c: c.baseAddress!, ldc: n, parallelism: parallelism)
                            }
                        }
                        let packed = PackedMatrix(packing: b.baseAddress!, ldb: k, transposed: true, k: k, n: n)
                        return try timedRuns {
                            ViTCore.gemm(a: a.baseAddress!, lda: k, b: packed, c: c.baseAddress!, ldc: n, m: m, parallelism: parallelism)
                        }
                    }
                }
            }
            let gflops = 2 * Double(m * n * k) / median / 1e9
            print(summary: [
                ("gemm", spec), ("best_ms", best * 1000), ("median_ms", median * 1000), (int8 ? "gops" : "gflops", gflops), (int8 ? "int8_peak_gops" : "fma_peak_gflops", peak),
                ("percent_of_peak", 100 * gflops / peak), ("threads", parallelism.threads),
                ("kernels", int8 ? VectorMath.int8Kernels : VectorMath.instructionSet), ("dtype", int8 ? "int8" : "f32"),
            ])
        }
    }

    /// Forward, backward and an AdamW update of a preset's shape with a 10-label head, on random inputs.
    private func timeTrainingStep() throws {
        ProcessSettings.keepFreedMemoryInHeap()
        guard let preset, model == nil else { throw CLIError("--train needs --preset") }
        var config = try ViTMSNConfig.preset(preset)
        config.id2label = Dictionary(uniqueKeysWithValues: (0..<10).map { ($0, "LABEL_\($0)") })
        config.label2id = Dictionary(uniqueKeysWithValues: (0..<10).map { ("LABEL_\($0)", $0) })
        let classifier = try ViTMSNForImageClassification.randomlyInitialized(config: config, seed: 0)
        classifier.vit.parallelism = threading.parallelism
        classifier.zeroGradients()
        var generator = SeededGenerator(seed: 1)
        let shape = [batch, config.numChannels, config.imageSize.height, config.imageSize.width]
        let pixels = Tensor(shape: shape, scalars: (0..<Tensor.elementCount(shape)).map { _ in generator.normal() })
        let labels = (0..<batch).map { Int64($0 % 10) }
        let optimizer = AdamW()
        let settings = OptimizationSettings(learningRate: 1e-4, weightDecay: 0.05, schedule: .constant, warmupSteps: 0, totalSteps: 1)
        var eval: NN.Dropout? = nil
        let median = try medianSeconds {
            _ = try optimizerStep(classifier, optimizer: optimizer, microBatches: [(pixels, labels)], settings: settings, dropout: &eval)
        }
        print(summary: [
            ("batch", batch), ("median_ms", median * 1000), ("images_per_s", Double(batch) / median),
            ("threads", classifier.vit.parallelism.threads), ("kernels", VectorMath.instructionSet),
        ])
    }

    /// Steps of a pretraining config on its first batch, in a scratch output directory.
    private func timeMSNStep(_ path: String) throws {
        ProcessSettings.keepFreedMemoryInHeap()
        var config = try PretrainConfig(path: path)
        config.batchSize = batchOption ?? config.batchSize
        (config.outputDir, config.maxImages, config.probeEvery) = (NSTemporaryDirectory() + "vitmsn-bench-\(UUID().uuidString)", config.batchSize, 0)
        defer { try? FileManager.default.removeItem(atPath: config.outputDir) }
        let trainer = try Pretrainer(config, resume: false, parallelism: threading.parallelism)
        let median = try medianSeconds { try trainer.stepOnFirstBatch() }
        print(summary: [
            ("batch", config.batchSize), ("median_ms", median * 1000), ("images_per_s", Double(config.batchSize) / median),
            ("threads", threading.parallelism.threads), ("kernels", VectorMath.instructionSet),
        ])
    }

    /// Decode + `load_image` conversion + `ViTImageProcessor`, on one core, as Python does it per image.
    private func timePreprocessing(_ path: String) throws {
        guard let model else { throw CLIError("--preprocess needs --model (for preprocessor_config.json)") }
        let processor = try ImageProcessor.load(modelDirectory: HubCache().resolve(model, revision: revision))
        let (_, median, p99) = try timedRuns { _ = try processor.pixelValues(ImageDecoder.loadRGB(path: path)) }
        print(summary: [("image", path), ("median_ms", median * 1000), ("p99_ms", p99 * 1000), ("images_per_s", 1 / median)])
    }

    /// The median duration of `timedRuns`.
    private func medianSeconds(_ body: () throws -> Void) throws -> Double {
        try timedRuns(body).median
    }

    /// One warm-up run, then runs back to back until `seconds` have passed (at least three): the shortest,
    /// median and 99th percentile of their durations, in seconds. On a shared machine the shortest is the run
    /// the neighbours disturbed least, the steadiest figure for comparing two builds.
    private func timedRuns(_ body: () throws -> Void) throws -> (best: Double, median: Double, p99: Double) {
        try body()
        var times: [Double] = []
        let start = Date()
        while times.count < 3 || Date().timeIntervalSince(start) < seconds {
            let t0 = Date()
            try body()
            times.append(Date().timeIntervalSince(t0))
        }
        times.sort()
        return (times[0], times[times.count / 2], times[min(times.count - 1, times.count * 99 / 100)])
    }

    private func print(summary fields: [(String, Any)]) {
        if json {
            let object = Dictionary(uniqueKeysWithValues: fields)
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            Swift.print(String(decoding: data, as: UTF8.self))
        } else {
            Swift.print(fields.map { name, value in
                "\(name) \(value is Double ? String(format: "%.2f", value as! Double) : "\(value)")"
            }.joined(separator: ", "))
        }
    }
}
