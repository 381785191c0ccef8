import Foundation
import ViTCore
import ViTIO

/// A Transformers model directory: `config.json` plus `model.safetensors`, or a
/// `model.safetensors.index.json` with its shards.
public enum ModelDirectory {
    public static func config(_ directory: String) throws -> ViTMSNConfig {
        let path = directory + "/config.json"
        guard FileManager.default.fileExists(atPath: path) else {
            throw CheckpointError(directory, "no config.json in the model directory")
        }
        do {
            return try ViTMSNConfig.load(path: path)
        } catch let error as ConfigError {
            throw CheckpointError(path, error.description)
        }
    }

    /// The weights, in Transformers' order of preference: safetensors first, then PyTorch pickles.
    public static func weights(_ directory: String) throws -> TensorSource {
        let candidates: [(String, (String) throws -> TensorSource)] = [
            ("model.safetensors", { try SafetensorsFile(path: $0) }),
            ("model.safetensors.index.json", { try ShardedCheckpoint(indexPath: $0) }),
            ("pytorch_model.bin", { try TorchCheckpoint(path: $0) }),
            ("pytorch_model.bin.index.json", { try ShardedCheckpoint(indexPath: $0) }),
        ]
        for (file, open) in candidates where FileManager.default.fileExists(atPath: directory + "/" + file) {
            return try open(directory + "/" + file)
        }
        throw CheckpointError(directory, "no model.safetensors, pytorch_model.bin or shard index in the model directory")
    }

    /// The class `config.json`'s `architectures` names (`ViTMSNModel` when absent).
    public static func architecture(_ config: ViTMSNConfig) -> String {
        config.architectures?.first ?? "ViTMSNModel"
    }
}

/// A loaded model of either class, as `config.json`'s `architectures` asks.
public enum AnyViTMSN {
    case model(ViTMSNModel)
    case imageClassification(ViTMSNForImageClassification)

    /// The encoder either way (its `parallelism` sets the cores a forward pass uses).
    public var backbone: ViTMSNModel {
        switch self {
        case .model(let model): model
        case .imageClassification(let model): model.vit
        }
    }

    /// Loads the class `config.json` names, in `precision` (see `WeightPrecision`); an int8 directory loads
    /// as int8.
    public static func load(directory: String, precision: WeightPrecision = .f32, warn: (String) -> Void = { _ in }) throws -> AnyViTMSN {
        let config = try ModelDirectory.config(directory)
        let loaded: AnyViTMSN
        switch ModelDirectory.architecture(config) {
        case "ViTMSNModel": loaded = .model(try ViTMSNModel.load(directory: directory, warn: warn))
        case "ViTMSNForImageClassification": loaded = .imageClassification(try ViTMSNForImageClassification.load(directory: directory, warn: warn))
        case let other: throw CheckpointError(directory + "/config.json", "architectures names '\(other)', expected ViTMSNModel or ViTMSNForImageClassification")
        }
        loaded.convert(to: precision)
        return loaded
    }
}

extension ViTMSNModel {
    /// Loads a backbone. Checkpoint names may carry the `vit.` prefix (a classification checkpoint); its
    /// classifier is then left out with a warning, as Transformers does. A checkpoint with
    /// `embeddings.mask_token` gives a model with a mask token.
    public static func load(directory: String, warn: (String) -> Void = { _ in }) throws -> ViTMSNModel {
        let config = try ModelDirectory.config(directory)
        let weights = try ModelDirectory.weights(directory)
        let names = weights.tensorNames
        let classifierNames = names.filter { $0.hasPrefix("classifier.") }
        if !classifierNames.isEmpty {
            warn("Some weights of the model checkpoint were not used when initializing ViTMSNModel: \(classifierNames)")
        }
        let useMaskToken = names.contains { stripPrefix($0) == "embeddings.mask_token" }
        let model = try ViTMSNModel(config: config, useMaskToken: useMaskToken)
        let prefix = names.contains { $0.hasPrefix("vit.") } ? "vit." : ""
        let quantized = try model.loadQuantizedLinears(from: weights) { prefix + $0 }
        _ = try loadParameters(of: model, from: weights, modelName: stripPrefix, ignoring: Set(classifierNames).union(quantized), optional: [])
        return model
    }
}

extension ViTMSNForImageClassification {
    /// Loads a classifier. A backbone checkpoint (no `vit.` prefix, no classifier) is accepted: the classifier
    /// is then initialised as Transformers initialises it, N(0, initializer_range²) weights and zero bias,
    /// and a warning says so. `labels` replaces the label names (fine-tuning on a new label set); a stored
    /// classifier with another number of labels is an error unless `ignoreMismatchedSizes`, which
    /// re-initialises it (Transformers' `ignore_mismatched_sizes`).
    public static func load(
        directory: String, labels: [String]? = nil, ignoreMismatchedSizes: Bool = false, seed: UInt64 = 0,
        warn: (String) -> Void = { _ in }
    ) throws -> ViTMSNForImageClassification {
        var config = try ModelDirectory.config(directory)
        let weights = try ModelDirectory.weights(directory)
        if let labels {
            config.id2label = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($0, $1) })
            config.label2id = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
            config.problemType = .singleLabelClassification
        }
        let classifierNames: Set<String> = ["classifier.weight", "classifier.bias"]
        var ignoring = Set<String>()
        if let stored = weights.info("classifier.weight"), stored.shape.first != config.numLabels {
            guard ignoreMismatchedSizes else {
                throw CheckpointError(
                    weights.location,
                    "the classifier has \(stored.shape.first ?? 0) labels and the data \(config.numLabels) classes; pass --ignore-mismatched-sizes (ignore_mismatched_sizes) to re-initialise the classifier")
            }
            ignoring = classifierNames
            warn("classifier.weight: checkpoint \(stored.shape), model [\(config.numLabels), \(config.hiddenSize)]: re-initialised (ignore_mismatched_sizes)")
        }
        let model = try ViTMSNForImageClassification(config: config)
        let prefix = weights.tensorNames.contains { $0.hasPrefix("vit.") } ? "vit." : ""
        let quantized = try model.vit.loadQuantizedLinears(from: weights) { prefix + $0 }
        let fresh = try loadParameters(
            of: model, from: weights,
            modelName: { name in name.hasPrefix("classifier.") || name.hasPrefix("vit.") ? name : "vit." + name },
            ignoring: ignoring.union(quantized), optional: classifierNames)
        if let classifier = model.classifier, !fresh.isEmpty {
            guard fresh == classifierNames else {
                throw CheckpointError(weights.location, "the checkpoint has only part of the classifier (missing \(fresh.sorted()))")
            }
            var generator = SeededGenerator(seed: seed)
            classifier.initialize(std: Float(config.initializerRange), using: &generator)
            warn("Some weights of ViTMSNForImageClassification were not initialized from the model checkpoint at \(directory) and are newly initialized: ['classifier.bias', 'classifier.weight']")
        }
        return model
    }
}

/// Copies every parameter of `module` from `source`, matching `modelName(checkpointName)` to the module's
/// names. Missing, unexpected and wrongly shaped tensors are all collected and reported in one error.
/// Returns the `optional` names the checkpoint did not have (left for the caller to initialise).
package func loadParameters(
    of module: NN.Module, from source: TensorSource,
    modelName: (String) -> String, ignoring: Set<String>, optional: Set<String>
) throws -> Set<String> {
    var checkpointName: [String: String] = [:]
    for name in source.tensorNames where !ignoring.contains(name) { checkpointName[modelName(name)] = name }
    var missing: [String] = []
    var mismatched: [String] = []
    var expected = Set<String>()
    for (name, tensor) in module.namedParameters {
        expected.insert(name)
        guard let stored = checkpointName[name], let info = source.info(stored) else {
            if !optional.contains(name) { missing.append(name) }
            continue
        }
        if info.shape != tensor.shape { mismatched.append("\(stored): checkpoint \(info.shape), model \(tensor.shape)") }
    }
    let unexpected = checkpointName.filter { !expected.contains($0.key) }.map(\.value).sorted()
    var problems: [String] = []
    if !missing.isEmpty { problems.append("missing tensors \(missing)") }
    if !unexpected.isEmpty { problems.append("unexpected tensors \(unexpected)") }
    if !mismatched.isEmpty { problems.append("wrongly shaped tensors \(mismatched)") }
    guard problems.isEmpty else { throw CheckpointError(source.location, problems.joined(separator: "; ")) }

    var fresh = Set<String>()
    try module.visitParameters { name, tensor in
        if let stored = checkpointName[name] {
            tensor = try source.floatTensor(stored)
        } else {
            fresh.insert(name)
        }
    }
    return fresh
}

private func stripPrefix(_ name: String) -> String {
    name.hasPrefix("vit.") ? String(name.dropFirst(4)) : name
}

// MARK: - Saving

extension NN.Module {
    /// Writes every parameter under its checkpoint name, as `dtype` (F32, F16 or BF16), atomically.
    public func saveSafetensors(path: String, dtype: DType = .F32) throws {
        let records = namedParameters.map { SafetensorsRecord(name: $0.name, tensor: $0.tensor, dtype: dtype) }
        try SafetensorsWriter.write(records, to: path)
    }
}

/// Writes `config.json` (with `architectures` and `dtype`, as Transformers 4.57 names it; an older
/// `torch_dtype` is dropped so the two never disagree) and `model.safetensors`: a directory that
/// Transformers' `from_pretrained` loads. An int8 model keeps its other tensors in F32 and records its
/// scheme as `quantization_config` (a directory for this project only).
func saveModelDirectory(_ module: NN.Module, backbone: ViTMSNModel, prefix: String, config: ViTMSNConfig, architecture: String, directory: String, dtype: DType) throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    var config = config
    config.architectures = [architecture]
    let quantized = backbone.quantizedRecords(prefix: prefix)
    let dtype = quantized.isEmpty ? dtype : .F32
    config.extraFields["dtype"] = ["F32": "float32", "F16": "float16", "BF16": "bfloat16"][dtype.rawValue]
    config.extraFields["torch_dtype"] = nil
    if !quantized.isEmpty {
        config.extraFields["quantization_config"] = Int8Checkpoint.config(weightBits: backbone.quantizedWeightBits ?? 8)
    }
    let records = module.namedParameters.map { SafetensorsRecord(name: $0.name, tensor: $0.tensor, dtype: dtype) } + quantized
    try SafetensorsWriter.write(records, to: directory + "/model.safetensors")
    try config.save(path: directory + "/config.json")
}

extension ViTMSNModel {
    public func save(directory: String, dtype: DType = .F32) throws {
        try saveModelDirectory(self, backbone: self, prefix: "", config: config, architecture: "ViTMSNModel", directory: directory, dtype: dtype)
    }
}

extension ViTMSNForImageClassification {
    public func save(directory: String, dtype: DType = .F32) throws {
        try saveModelDirectory(self, backbone: vit, prefix: "vit.", config: config, architecture: "ViTMSNForImageClassification", directory: directory, dtype: dtype)
    }
}

// MARK: - Fresh models

extension ViTMSNModel {
    /// A model with every parameter drawn from N(0, initializer_range²) (LayerNorms at weight 1, bias 0):
    /// realistic magnitudes for benchmarks and tests without a checkpoint.
    public static func randomlyInitialized(config: ViTMSNConfig, seed: UInt64) throws -> ViTMSNModel {
        let model = try ViTMSNModel(config: config)
        fillRandomly(model, std: Float(config.initializerRange), seed: seed)
        return model
    }
}

extension ViTMSNForImageClassification {
    /// The same for a classifier: a model to train from scratch, or a backbone with a fresh head.
    public static func randomlyInitialized(config: ViTMSNConfig, seed: UInt64) throws -> ViTMSNForImageClassification {
        let model = try ViTMSNForImageClassification(config: config)
        fillRandomly(model, std: Float(config.initializerRange), seed: seed)
        return model
    }
}

private func fillRandomly(_ module: NN.Module, std: Float, seed: UInt64) {
    var generator = SeededGenerator(seed: seed)
    module.visitParameters { name, tensor in
        guard !name.contains("layernorm") else { return }
        tensor.withUnsafeMutableBufferPointer { values in
            for i in values.indices { values[i] = generator.normal(std: std) }
        }
    }
}
