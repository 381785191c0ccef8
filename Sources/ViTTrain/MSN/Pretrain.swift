import Foundation
import ViTCore
import ViTIO
import ViTDistributed
import ViTModel
import ViTMSN
import ViTVision

/// An MSN pretraining run, read from YAML or JSON with the sections of the official `msn_vits16.yaml` (`meta`,
/// `criterion`, `data`, `optimization`); every field has the released config's value unless noted.
public struct PretrainConfig: Sendable, Decodable {
    // meta
    public var model = "fashion-mnist"      // a preset (fresh weights) or a model directory to continue from
    public var architecture: [String: Int] = [:] // preset overrides: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, patch_size
    public var hiddenDim = 2048, outputDim = 256
    public var seed: UInt64 = 0
    public var outputDir = "out/pretrain"
    public var patchDrop = 0.15
    // criterion
    public var loss = MSNLossSettings()
    public var numProto = 1024
    public var batchSize = 64
    public var microBatchSize: Int?         // images per shard of the global batch (default: batch / 4, see BatchShards)
    // data
    public var dataset = "fashion-mnist"    // or an image folder
    public var randSize = 224, focalSize = 96
    public var focalViews = 10
    public var randScale = 0.3...1.0, focalScale = 0.05...0.3
    public var colorJitter = 0.5
    public var maxImages: Int?
    // optimization
    public var epochs = 800
    public var warmup = 15.0                // epochs
    public var startLR: Float = 2e-4, lr: Float = 1e-3, finalLR: Float = 1e-6
    public var weightDecay: Float = 0.04, finalWeightDecay: Float = 0.4
    public var clipGrad: Float = 3
    public var emaStart = 0.996, emaEnd = 1.0
    public var probeEvery = 1               // epochs between low-shot probes (0: none)

    public init() {}

    public init(path: String) throws {
        do { self = try decodeConfigFile(PretrainConfig.self, path: path) } catch {
            throw TrainingError("\(error) (expected the sections of msn_vits16.yaml, in YAML or JSON)")
        }
    }

    /// `WarmupCosineSchedule` at optimiser step `step` (1-based, as the scheduler steps before the update):
    /// linear from start_lr to lr over the warm-up, then cosine towards final_lr over 1.25× the run (so the
    /// run ends at about 80 % of the cosine, as the official code does).
    func learningRate(step: Int, stepsPerEpoch: Int) -> Float {
        let warmupSteps = Int(warmup * Double(stepsPerEpoch))
        if step < warmupSteps { return startLR + Float(step) / Float(warmupSteps) * (lr - startLR) }
        let span = max(1, Int(1.25 * Double(epochs * stepsPerEpoch)) - warmupSteps)
        let progress = Double(step - warmupSteps) / Double(span)
        return max(finalLR, finalLR + (lr - finalLR) * Float(0.5 * (1 + cos(Double.pi * progress))))
    }

    /// `CosineWDSchedule`: weight_decay → final_weight_decay over 1.25× the run.
    func weightDecay(step: Int, stepsPerEpoch: Int) -> Float {
        let span = Double(Int(1.25 * Double(epochs * stepsPerEpoch)))
        return finalWeightDecay + (weightDecay - finalWeightDecay) * Float(0.5 * (1 + cos(Double.pi * Double(step) / span)))
    }

    /// The EMA momentum of update `step` (0-based): 0.996 + step·(1 − 0.996)/(1.25 × total steps).
    func momentum(step: Int, stepsPerEpoch: Int) -> Float {
        Float(emaStart + Double(step) * (emaEnd - emaStart) / (Double(stepsPerEpoch * epochs) * 1.25))
    }
}

extension PretrainConfig {
    /// The fields each section may hold: the ones read here, then the official `msn_vits16.yaml`'s others,
    /// accepted so that file loads (those that change the method are checked below).
    static let knownFields: [String: [String]] = [
        "meta": ["model", "model_name", "architecture", "hidden_dim", "output_dim", "seed", "output_dir",
                 "bottleneck", "copy_data", "drop_path_rate", "load_checkpoint", "read_checkpoint", "use_bn", "use_fp16", "use_pred_head"],
        "criterion": ["batch_size", "micro_batch_size", "num_proto", "temperature", "final_sharpen", "start_sharpen", "me_max", "memax_weight",
                      "ent_weight", "use_sinkhorn", "use_ent"],
        "data": ["dataset", "image_folder", "root_path", "patch_drop", "rand_size", "focal_size", "focal_views", "rand_scale",
                 "focal_scale", "color_jitter_strength", "max_images", "rand_views", "label_smoothing", "pin_mem", "num_workers"],
        "optimization": ["epochs", "warmup", "start_lr", "lr", "final_lr", "weight_decay", "final_weight_decay", "clip_grad", "ema", "probe_every"],
        "logging": ["folder", "write_tag"],
    ]

    /// The four sections of `msn_vits16.yaml` (and an optional `logging`), each required; a missing field keeps
    /// the released config's value, but the data and the epochs must be named. Unknown sections and fields are
    /// errors with the nearest known name, and every value is checked for its range.
    public init(from decoder: Decoder) throws {
        self.init()
        let sections = try decoder.container(keyedBy: ConfigKey.self)
        for key in sections.allKeys where Self.knownFields[key.stringValue] == nil {
            throw sections.invalid(key, "is not a section of the config\(Self.suggestion(for: key.stringValue, among: Array(Self.knownFields.keys)))")
        }
        for name in ["meta", "criterion", "data", "optimization"] where !sections.contains(ConfigKey(stringValue: name)) {
            throw DecodingError.keyNotFound(ConfigKey(stringValue: name), .init(codingPath: [], debugDescription: "a required section"))
        }
        func section(_ name: String) throws -> KeyedDecodingContainer<ConfigKey> {
            let fields = try sections.decode(Section.self, forKey: ConfigKey(stringValue: name)).fields
            let known = Set(Self.knownFields[name]!)
            for key in fields.allKeys where !known.contains(key.stringValue) {
                let everywhere = Self.knownFields.flatMap { section, keys in keys.map { "\(section).\($0)" } }
                throw fields.invalid(key, "is not a field of '\(name)'\(Self.suggestion(for: key.stringValue, among: Array(known) + everywhere))")
            }
            return fields
        }
        let (meta, criterion, data, optimization) = try (section("meta"), section("criterion"), section("data"), section("optimization"))
        let logging = sections.contains("logging") ? try section("logging") : nil
        func range(_ fields: KeyedDecodingContainer<ConfigKey>, _ key: ConfigKey) throws -> ClosedRange<Double>? {
            guard let pair = try fields.decodeIfPresent([Double].self, forKey: key) else { return nil }
            guard pair.count == 2, pair[0] <= pair[1] else { throw fields.invalid(key, "needs [low, high] with low ≤ high, got \(pair)") }
            return pair[0]...pair[1]
        }
        // The official configs name a DeiT (`model_name: deit_small`); `model` (a preset or directory) wins.
        let deit = ["deit_small": "small", "deit_base": "base", "deit_large": "large", "deit_base_p4": "base-4", "deit_large_p7": "large-7"]
        if let name = try meta.decodeIfPresent(String.self, forKey: "model_name") {
            guard let preset = deit[name] else { throw meta.invalid("model_name", "'\(name)' is not one of \(deit.keys.sorted())") }
            model = preset
        }
        model = try meta.decodeIfPresent(String.self, forKey: "model") ?? model
        if meta.contains("architecture") {
            let fields = try meta.nestedContainer(keyedBy: ConfigKey.self, forKey: "architecture")
            let known: Set = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size"]
            for key in fields.allKeys {
                guard known.contains(key.stringValue) else { throw fields.invalid(key, "not one of \(known.sorted())") }
                architecture[key.stringValue] = try fields.integer(key)
            }
        }
        hiddenDim = try meta.integer("hidden_dim") ?? hiddenDim
        outputDim = try meta.integer("output_dim") ?? outputDim
        let seedValue = try meta.integer("seed") ?? 0
        guard seedValue >= 0 else { throw meta.invalid("seed", "must not be negative, got \(seedValue)") }
        seed = UInt64(seedValue)
        outputDir = try meta.decodeIfPresent(String.self, forKey: "output_dir") ?? logging?.decodeIfPresent(String.self, forKey: "folder") ?? outputDir
        patchDrop = try data.number("patch_drop") ?? patchDrop
        loss = try sections.decodeIfPresent(MSNLossSettings.self, forKey: "criterion") ?? loss
        numProto = try criterion.integer("num_proto") ?? numProto
        batchSize = try criterion.integer("batch_size") ?? batchSize
        microBatchSize = try criterion.integer("micro_batch_size")
        if let name = try data.decodeIfPresent(String.self, forKey: "dataset") {
            dataset = name
        } else if let folder = try data.decodeIfPresent(String.self, forKey: "image_folder") {
            let root = try data.decodeIfPresent(String.self, forKey: "root_path")
            dataset = root.map { URL(fileURLWithPath: $0).appendingPathComponent(folder).path } ?? folder // the official root_path/image_folder
        } else {
            throw DecodingError.keyNotFound(ConfigKey(stringValue: "dataset"), .init(codingPath: [ConfigKey(stringValue: "data")],
                debugDescription: "data.dataset (fashion-mnist or a folder) or data.image_folder must name the images"))
        }
        randSize = try data.integer("rand_size") ?? randSize
        focalSize = try data.integer("focal_size") ?? focalSize
        focalViews = try data.integer("focal_views") ?? focalViews
        randScale = try range(data, "rand_scale") ?? randScale
        focalScale = try range(data, "focal_scale") ?? focalScale
        colorJitter = try data.number("color_jitter_strength") ?? colorJitter
        maxImages = try data.integer("max_images")
        guard let epochCount = try optimization.integer("epochs") else {
            throw DecodingError.keyNotFound(ConfigKey(stringValue: "epochs"), .init(codingPath: [ConfigKey(stringValue: "optimization")], debugDescription: "required"))
        }
        epochs = epochCount
        warmup = try optimization.number("warmup") ?? warmup
        startLR = try optimization.number("start_lr").map(Float.init) ?? startLR
        lr = try optimization.number("lr").map(Float.init) ?? lr
        finalLR = try optimization.number("final_lr").map(Float.init) ?? finalLR
        weightDecay = try optimization.number("weight_decay").map(Float.init) ?? weightDecay
        finalWeightDecay = try optimization.number("final_weight_decay").map(Float.init) ?? finalWeightDecay
        clipGrad = try optimization.number("clip_grad").map(Float.init) ?? clipGrad
        if let ema = try range(optimization, "ema") { (emaStart, emaEnd) = (ema.lowerBound, ema.upperBound) }
        probeEvery = try optimization.integer("probe_every") ?? probeEvery
        func require(_ holds: Bool, _ fields: KeyedDecodingContainer<ConfigKey>, _ key: ConfigKey, _ rule: String) throws {
            if !holds { throw fields.invalid(key, rule) }
        }
        try require((2...65_536).contains(batchSize), criterion, "batch_size", "must be 2 to 65,536, got \(batchSize)")
        try require((2...1 << 20).contains(numProto), criterion, "num_proto", "must be 2 to 2^20, got \(numProto)")
        try require((1...1 << 16).contains(hiddenDim), meta, "hidden_dim", "must be 1 to 65,536, got \(hiddenDim)")
        try require((1...1 << 16).contains(outputDim), meta, "output_dim", "must be 1 to 65,536, got \(outputDim)")
        try require((1...100_000).contains(epochs), optimization, "epochs", "must be 1 to 100,000, got \(epochs)")
        try require((0...100_000).contains(warmup), optimization, "warmup", "must be 0 to 100,000 epochs, got \(warmup)")
        try require((0..<1).contains(patchDrop), data, "patch_drop", "must be in [0, 1), got \(patchDrop)")
        try require((0...64).contains(focalViews), data, "focal_views", "must be 0 to 64, got \(focalViews)")
        try require((1...4096).contains(randSize), data, "rand_size", "must be 1 to 4096, got \(randSize)")
        try require((1...4096).contains(focalSize), data, "focal_size", "must be 1 to 4096, got \(focalSize)")
        try require(randScale.lowerBound > 0 && randScale.upperBound <= 1, data, "rand_scale", "must lie in (0, 1], got \(randScale)")
        try require(focalScale.lowerBound > 0 && focalScale.upperBound <= 1, data, "focal_scale", "must lie in (0, 1], got \(focalScale)")
        try require(colorJitter >= 0 && colorJitter <= 10, data, "color_jitter_strength", "must be 0 to 10, got \(colorJitter)")
        try require(maxImages.map { $0 > 0 } ?? true, data, "max_images", "must be positive")
        try require(probeEvery >= 0, optimization, "probe_every", "must not be negative")
        try require(emaStart >= 0 && emaEnd <= 1, optimization, "ema", "must lie in [0, 1]")
        for (key, value) in [("start_lr", startLR), ("lr", lr), ("final_lr", finalLR), ("weight_decay", weightDecay),
                             ("final_weight_decay", finalWeightDecay), ("clip_grad", clipGrad)] {
            try require(value >= 0 && value <= 1e6, optimization, ConfigKey(stringValue: key), "must be 0 to 10^6, got \(value)")
        }
        // Official fields this implementation does not vary: refuse a value that would change the method.
        try require(try data.integer("rand_views") ?? 1 == 1, data, "rand_views", "only 1 (a target and an anchor view) is implemented")
        try require(try data.number("label_smoothing") ?? 0 == 0, data, "label_smoothing", "only 0 is implemented")
        try require(try meta.number("drop_path_rate") ?? 0 == 0, meta, "drop_path_rate", "only 0 is implemented")
        try require(try meta.decodeIfPresent(Bool.self, forKey: "use_pred_head") != true, meta, "use_pred_head", "a prediction head is not implemented")
        try require(try meta.decodeIfPresent(Bool.self, forKey: "use_bn") != false, meta, "use_bn", "the head always has BatchNorm")
    }

    /// ", did you mean 'x'?" for the candidate nearest `name` in edit distance (a dotted candidate by its last
    /// part), when one is near.
    static func suggestion(for name: String, among candidates: [String]) -> String {
        func distance(_ a: [Character], _ b: [Character]) -> Int { // Levenshtein, one row at a time
            var row = Array(0...b.count)
            for (i, x) in a.enumerated() {
                var diagonal = row[0]
                row[0] = i + 1
                for (j, y) in b.enumerated() {
                    (diagonal, row[j + 1]) = (row[j + 1], min(row[j + 1] + 1, row[j] + 1, diagonal + (x == y ? 0 : 1)))
                }
            }
            return row[b.count]
        }
        let scored = candidates.map { ($0, distance(Array(name), Array($0.split(separator: ".").last ?? ""))) }
        guard let best = scored.min(by: { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0.count < $1.0.count) }), best.1 <= max(2, name.count / 3) else { return "" }
        return "; did you mean '\(best.0)'?"
    }

    /// A section's fields, read one by one above.
    private struct Section: Decodable {
        let fields: KeyedDecodingContainer<ConfigKey>
        init(from decoder: Decoder) throws { fields = try decoder.container(keyedBy: ConfigKey.self) }
    }
}

/// What a pretraining run reports.
public enum PretrainEvent {
    case started(images: Int, stepsPerEpoch: Int, resumedAt: Int?)
    case step(epoch: Int, batch: Int, batchesPerEpoch: Int, result: MSNLossResult, learningRate: Float, momentum: Float, imagesPerSecond: Double)
    case epochEnded(epoch: Int, seconds: Double)
    case probe(epoch: Int, report: [(String, Double)])
    case saved(path: String)
}

/// MSN pretraining (`src/msn_train.py`): per image a target view, an anchor view with patches dropped and
/// focal views; the target encoder and head are an EMA of the anchor ones; AdamW with the warm-up + cosine
/// learning rate, cosine weight decay, clipping of the encoder and head gradients; a checkpoint per epoch.
///
/// Data-parallel under MPI (`communicator`): the config's batch is the global batch, each rank computes a
/// fixed slice of it, and every random draw comes from the seed and global indices (the sample order per
/// epoch, each sample's views, the anchor's patch-drop set per global batch from the step number), so N ranks
/// run the one-process run: SyncBatchNorm in the heads, the loss over the global batch, gradients summed in
/// buckets during the backward. Rank 0 alone writes checkpoints and logs; `output_dir` must be a path every
/// rank can read (a shared filesystem across hosts) for `--resume`.
public final class Pretrainer {
    public let config: PretrainConfig
    public let model: MSNModel
    public let target: MSNModel  // EMA copy (its prototypes are unused)
    public let processor: ImageProcessor
    let loader: BatchLoader<[Tensor]>
    let optimizer = AdamW()
    var state = TrainerState()
    let checkpoints: CheckpointDirectory
    public let communicator: Communicator
    /// The encoder's gradients, shard by shard, summed over the ranks (the head's and prototypes' are computed
    /// on the global batch on every rank).
    public let gradients: ShardedGradients
    let shards: BatchShards
    /// Optimizer steps between checks that every rank holds the same parameters (0: never).
    public var checksumEvery = 100
    /// A low-shot probe of the target encoder, run every `probeEvery` epochs (on every rank: it is collective).
    public var probe: ((ViTMSNModel) throws -> [(String, Double)])?

    /// An output folder that holds files needs `resume` or `overwriteOutputDir`.
    public init(_ config: PretrainConfig, resume: Bool, overwriteOutputDir: Bool = false, parallelism: Parallelism = Parallelism(),
                communicator: Communicator = SingleProcess()) throws {
        self.config = config
        self.communicator = communicator
        shards = try BatchShards(batchSize: config.batchSize, microBatchSize: config.microBatchSize, ranks: communicator.size, field: "criterion.micro_batch_size")
        let writer = communicator.rank == 0
        checkpoints = writer ? try CheckpointDirectory(config.outputDir, resume: resume, overwrite: overwriteOutputDir) : CheckpointDirectory(reading: config.outputDir)
        let resumeFrom = resume ? try checkpoints.last() : nil
        if resume && resumeFrom == nil { throw TrainingError("\(config.outputDir): --resume, but there is no checkpoint to resume from") }
        let start = try resumeFrom ?? (writer ? Self.initialModel(config) : Self.initialModelPath(config))
        communicator.barrier("start-up (rank 0 writes the initial model)")
        model = try MSNModel.load(directory: start, hiddenSize: config.hiddenDim, outputSize: config.outputDim, prototypeCount: config.numProto, seed: config.seed)
        target = try MSNModel.load(directory: start, hiddenSize: config.hiddenDim, outputSize: config.outputDim, prototypeCount: config.numProto, seed: config.seed)
        if let resumeFrom {
            try Self.loadAnchor(model, from: resumeFrom + "/anchor.safetensors")
            state = try readResumeState(from: resumeFrom, optimizer: optimizer, model: model)
        }
        for m in [model, target] { m.encoder.parallelism = parallelism }
        model.zeroGradients()
        gradients = ShardedGradients(model, communicator: communicator) { !$0.hasPrefix("fc.") && $0 != "prototypes" }
        processor = try ImageProcessor.load(modelDirectory: start, orDefaultFor: model.encoder.config)
        let channels = model.encoder.config.numChannels
        var data: LabeledImages = config.dataset == "fashion-mnist"
            ? try FashionMNIST.load(train: true, grayscale: channels == 1)
            : try ImageFolder.trainingSplit(of: config.dataset, grayscale: channels == 1)
        if let limit = config.maxImages, limit < data.count { data = Subset(data, indices: Array(0..<limit)) }
        let rand = MSNViewAugmentation(processor: processor, size: config.randSize, scale: config.randScale, colorJitter: config.colorJitter)
        let focal = MSNViewAugmentation(processor: processor, size: config.focalSize, scale: config.focalScale, colorJitter: config.colorJitter)
        let focalViews = config.focalViews
        // Each sample is its views: target, anchor, then the focal views.
        let (shards, rank, ranks) = (shards, communicator.rank, communicator.size)
        let shard: @Sendable (Int) -> Range<Int> = { count in shards.images(of: rank, ranks: ranks, in: count) }
        loader = BatchLoader(dataset: data, batchSize: config.batchSize, shuffle: true, seed: config.seed, dropLast: true, shard: shard) { image, generator in
            [rand.pixelValues(image, using: &generator), rand.pixelValues(image, using: &generator)]
                + (0..<focalViews).map { _ in focal.pixelValues(image, using: &generator) }
        }
    }

    /// A fresh model directory for a preset name (written into the output directory), or the directory given.
    static func initialModel(_ config: PretrainConfig) throws -> String {
        let directory = initialModelPath(config)
        guard directory != config.model else { return directory }
        if !FileManager.default.fileExists(atPath: directory + "/config.json") {
            var modelConfig = try ViTMSNConfig.preset(config.model)
            modelConfig.imageSize = .square(config.randSize)
            let a = config.architecture
            modelConfig.hiddenSize = a["hidden_size"] ?? modelConfig.hiddenSize
            modelConfig.numHiddenLayers = a["num_hidden_layers"] ?? modelConfig.numHiddenLayers
            modelConfig.numAttentionHeads = a["num_attention_heads"] ?? modelConfig.numAttentionHeads
            modelConfig.intermediateSize = a["intermediate_size"] ?? modelConfig.intermediateSize
            if let patch = a["patch_size"] { modelConfig.patchSize = .square(patch) }
            try modelConfig.validate()
            try ViTMSNModel.randomlyInitialized(config: modelConfig, seed: config.seed).save(directory: directory)
            try ImageProcessor(height: config.randSize, width: config.randSize).save(modelDirectory: directory)
        }
        return directory
    }

    static func initialModelPath(_ config: PretrainConfig) -> String {
        ViTMSNConfig.presetNames.contains(config.model) ? config.outputDir + "/initial" : config.model
    }

    /// A batch's per-sample views stacked into the step's views, focal views view-major.
    func views(_ batch: LoadedBatch<[Tensor]>, keep: [Int]) -> MSNViews {
        let samples = batch.samples
        let focal = config.focalViews == 0 ? nil : Tensor.stacked((0..<config.focalViews).flatMap { v in samples.map { $0[2 + v] } })
        return MSNViews(target: Tensor.stacked(samples.map { $0[0] }), anchor: Tensor.stacked(samples.map { $0[1] }), focal: focal, keep: keep)
    }

    /// Trains to the last epoch. Only rank 0 reports `events`, logs and saves.
    public func run(stopAfterStep: Int? = nil, events: (PretrainEvent) -> Void) throws {
        let writer = communicator.rank == 0
        func report(_ event: PretrainEvent) { if writer { events(event) } }
        let stepsPerEpoch = loader.batchesPerEpoch
        report(.started(images: loader.dataset.count, stepsPerEpoch: stepsPerEpoch, resumedAt: state.globalStep == 0 ? nil : state.globalStep))
        let log = writer ? try PretrainLog(directory: config.outputDir, resumingAt: state.globalStep) : nil
        var collapsedSteps = 0
        while state.epoch < config.epochs {
            let epochStart = Date()
            var started = Date()
            let batches = loader.batches(epoch: state.epoch, from: state.batchInEpoch)
            while let batch = batches.next() {
                state.batchInEpoch += 1
                let images = communicator.isDistributed ? Int(communicator.sum(Double(batch.labels.count), label: "the batch's image count")) : batch.labels.count
                guard images > 1 else { continue }
                guard !batch.labels.isEmpty else {
                    throw TrainingError("rank \(communicator.rank): no image of its slice of batch \(state.batchInEpoch) (epoch \(state.epoch + 1)) could be read: \(batch.skipped.prefix(3))")
                }
                let (result, learningRate, weightDecay, momentum) = try step(batch)
                collapsedSteps = result.distinctTargets == 1 ? collapsedSteps + 1 : 0
                guard collapsedSteps < 20 else {
                    throw TrainingError("collapse: for 20 steps every target chose the same prototype (step \(state.globalStep)); stopping")
                }
                if checksumEvery > 0, state.globalStep % checksumEvery == 0 {
                    communicator.requireAgreement(on: checksum(), label: "the parameter checksum after step \(state.globalStep)")
                }
                let speed = Double(images) / Date().timeIntervalSince(started)
                started = Date()
                try log?.step(state.globalStep, epoch: state.epoch, result: result, learningRate: learningRate, weightDecay: weightDecay, momentum: momentum, imagesPerSecond: speed)
                report(.step(epoch: state.epoch, batch: state.batchInEpoch, batchesPerEpoch: stepsPerEpoch, result: result, learningRate: learningRate, momentum: momentum, imagesPerSecond: speed))
                if state.globalStep == stopAfterStep, state.batchInEpoch < stepsPerEpoch {
                    if writer { report(.saved(path: try save())) }
                    return
                }
            }
            (state.epoch, state.batchInEpoch) = (state.epoch + 1, 0)
            report(.epochEnded(epoch: state.epoch, seconds: Date().timeIntervalSince(epochStart)))
            if let probe, config.probeEvery > 0, state.epoch % config.probeEvery == 0 || state.epoch == config.epochs {
                let probed = try probe(target.encoder)
                try log?.probe(state.globalStep, epoch: state.epoch, report: probed)
                report(.probe(epoch: state.epoch, report: probed))
            }
            if writer {
                report(.saved(path: try save()))
                try log?.drawCurves()
            }
            if state.globalStep == stopAfterStep { return }
        }
    }

    /// The bits of everything that must agree across ranks: both networks, the prototypes and the heads'
    /// BatchNorm statistics.
    func checksum() -> UInt64 {
        var buffers: [Tensor] = []
        for head in [model.head, target.head] { head.visitBuffers { _, value in buffers.append(value) } }
        return parameterChecksum([model, target], buffers: buffers)
    }

    /// One optimizer step on a loaded batch (this rank's slice): the anchor patches kept are drawn from the
    /// step number, one set for the whole global batch, so it does not depend on the ranks; forward
    /// and backward, clipping of the encoder and head gradients, AdamW, then the EMA update of the target.
    /// A non-finite loss throws before any weight changes.
    func step(_ batch: LoadedBatch<[Tensor]>) throws -> (result: MSNLossResult, learningRate: Float, weightDecay: Float, momentum: Float) {
        let stepsPerEpoch = loader.batchesPerEpoch
        let patchSize = model.encoder.config.patchSize
        let numPatches = (config.randSize / patchSize.height) * (config.randSize / patchSize.width)
        var generator = SeededGenerator(seed: config.seed, state.globalStep, -7)
        let keep = Array(Array(0..<numPatches).shuffled(using: &generator).prefix(Int(Double(numPatches) * (1 - config.patchDrop))))
        let result = try msnForwardBackward(
            model, targetEncoder: target.encoder, targetHead: target.head, views: views(batch, keep: keep), settings: config.loss,
            shards: shards.local(batch, rank: communicator.rank, ranks: communicator.size), gradients: gradients, communicator: communicator)
        gradients.finish()
        guard result.loss.isFinite else {
            throw TrainingError("the loss is \(result.loss) at step \(state.globalStep + 1): stopping before the weights change")
        }
        let step = state.globalStep
        let learningRate = config.learningRate(step: step + 1, stepsPerEpoch: stepsPerEpoch)
        let weightDecay = config.weightDecay(step: step + 1, stepsPerEpoch: stepsPerEpoch)
        clipGradientNorm(model, maxNorm: config.clipGrad) { $0 != "prototypes" }
        optimizer.step(model, learningRate: learningRate, weightDecay: weightDecay, decays: msnDecaysWeight)
        model.zeroGradients()
        let momentum = config.momentum(step: step, stepsPerEpoch: stepsPerEpoch)
        updateTarget(momentum: momentum)
        state.globalStep += 1
        return (result, learningRate, weightDecay, momentum)
    }

    /// An optimizer step on the data's first batch, loaded once (what `vitmsn bench --msn` times).
    public func stepOnFirstBatch() throws {
        if firstBatch == nil { firstBatch = loader.batches(epoch: 0, from: 0).next() }
        guard let firstBatch else { throw TrainingError("no data to time a step on") }
        _ = try step(firstBatch)
    }
    private var firstBatch: LoadedBatch<[Tensor]>?

    /// target ← m·target + (1 − m)·anchor, over the encoder's and head's parameters (not BatchNorm statistics).
    func updateTarget(momentum m: Float) {
        var anchor: [String: Tensor] = [:]
        model.visitParameters { name, value in anchor[name] = value }
        target.visitParameters { name, value in
            guard name != "prototypes", let source = anchor[name] else { return }
            value.withUnsafeMutableBufferPointer { t in source.withUnsafeBufferPointer { s in for i in t.indices { t[i] = m * t[i] + (1 - m) * s[i] } } }
        }
    }

    /// A checkpoint: the target encoder as a Transformers model directory with `msn_head.safetensors` (target
    /// head and the prototypes), plus the anchor networks, the optimizer and the run state for `--resume`.
    func save() throws -> String {
        let name = String(format: "checkpoint-%06d", state.globalStep)
        state.optimizerSteps = optimizer.stepCount
        let path = try checkpoints.write(name) { directory in
            try target.encoder.save(directory: directory)
            try writeHead(target.head, prototypes: model.prototypes, to: directory + "/msn_head.safetensors")
            var records = model.namedParameters.map { SafetensorsRecord(name: $0.name, tensor: $0.tensor) }
            model.head.visitBuffers { name, value in records.append(SafetensorsRecord(name: "fc." + name, tensor: value)) }
            try SafetensorsWriter.write(records, to: directory + "/anchor.safetensors")
            try processor.save(modelDirectory: directory)
            try writeResumeState(state, optimizer: optimizer, to: directory)
        }
        try checkpoints.point("last", at: name)
        try checkpoints.removeUnreferenced()
        return path
    }

    static func loadAnchor(_ model: MSNModel, from path: String) throws {
        let file = try SafetensorsFile(path: path)
        try model.visitParameters { name, value in value = try checkedTensor(file, name, shape: value.shape) }
        try model.head.visitBuffers { name, value in value = try checkedTensor(file, "fc." + name, shape: value.shape) }
    }
}

/// `msn_head.safetensors`: the head's parameters and BatchNorm statistics under `fc.`, and the prototypes.
func writeHead(_ head: MSNProjectionHead, prototypes: Tensor, to path: String) throws {
    var records: [SafetensorsRecord] = []
    head.visitParameters { name, value in records.append(SafetensorsRecord(name: "fc." + name, tensor: value)) }
    head.visitBuffers { name, value in records.append(SafetensorsRecord(name: "fc." + name, tensor: value)) }
    records.append(SafetensorsRecord(name: "prototypes", tensor: prototypes))
    try SafetensorsWriter.write(records, to: path)
}
