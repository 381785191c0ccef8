import Foundation
import ViTCore
import ViTIO

/// A config field that is missing, of the wrong type, or out of range.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let field: String
    public let reason: String
    public var description: String { "config field '\(field)': \(reason)" }
}

/// `image_size` and `patch_size` may be one integer or a [height, width] pair; both forms survive a round trip.
public struct Size2: Equatable, Sendable {
    public var height: Int
    public var width: Int
    public var isPair: Bool

    public static func square(_ side: Int) -> Size2 { Size2(height: side, width: side, isPair: false) }

    var jsonValue: Any { isPair ? [height, width] : height }
}

/// Transformers' `ViTMSNConfig` (`model_type: "vit_msn"`), read from and written to `config.json`.
/// Keys this type does not model are kept in `extraFields` and written back unchanged.
public struct ViTMSNConfig: @unchecked Sendable {
    public var hiddenSize = 768
    public var numHiddenLayers = 12
    public var numAttentionHeads = 12
    public var intermediateSize = 3072
    public var hiddenAct = "gelu"
    public var hiddenDropoutProb = 0.0
    public var attentionProbsDropoutProb = 0.0
    public var initializerRange = 0.02
    public var layerNormEps = 1e-6
    public var imageSize = Size2.square(224)
    public var patchSize = Size2.square(16)
    public var numChannels = 3
    public var qkvBias = true
    /// Label names by class index; its size is `num_labels`.
    public var id2label: [Int: String] = [0: "LABEL_0", 1: "LABEL_1"]
    public var label2id: [String: Int] = ["LABEL_0": 0, "LABEL_1": 1]
    public var problemType: ProblemType?
    public var architectures: [String]?
    public var extraFields: [String: Any] = [:]

    public enum ProblemType: String, CaseIterable, Sendable {
        case regression
        case singleLabelClassification = "single_label_classification"
        case multiLabelClassification = "multi_label_classification"
    }

    public init() {}

    // MARK: - Derived sizes

    public var numLabels: Int { id2label.count }
    public var headDim: Int { hiddenSize / numAttentionHeads }
    public var gridHeight: Int { imageSize.height / patchSize.height }
    public var gridWidth: Int { imageSize.width / patchSize.width }
    /// Patches per image at the configured size (`N`); the sequence adds the CLS token.
    public var numPatches: Int { gridHeight * gridWidth }
    public var activation: Activation { Activation(rawValue: hiddenAct)! }

    /// Replaces the labels by `count` generic ones (`LABEL_i`), as `num_labels=` does in Transformers.
    public mutating func setNumLabels(_ count: Int) {
        id2label = Dictionary(uniqueKeysWithValues: (0..<count).map { ($0, "LABEL_\($0)") })
        label2id = Dictionary(uniqueKeysWithValues: id2label.map { ($1, $0) })
    }

    // MARK: - Validation

    public func validate() throws {
        func positive(_ value: Int, _ field: String) throws {
            guard value > 0 else { throw ConfigError(field: field, reason: "must be positive, got \(value)") }
        }
        try positive(hiddenSize, "hidden_size")
        try positive(numHiddenLayers, "num_hidden_layers")
        try positive(numAttentionHeads, "num_attention_heads")
        try positive(intermediateSize, "intermediate_size")
        try positive(imageSize.height, "image_size")
        try positive(imageSize.width, "image_size")
        try positive(patchSize.height, "patch_size")
        try positive(patchSize.width, "patch_size")
        try positive(numChannels, "num_channels")
        guard hiddenSize % numAttentionHeads == 0 else {
            throw ConfigError(
                field: "hidden_size",
                reason: "The hidden size \(hiddenSize) is not a multiple of the number of attention heads \(numAttentionHeads)."
            )
        }
        guard Activation(rawValue: hiddenAct) != nil else {
            let known = Activation.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigError(field: "hidden_act", reason: "unknown activation '\(hiddenAct)' (known: \(known))")
        }
        guard patchSize.height <= imageSize.height, patchSize.width <= imageSize.width else {
            throw ConfigError(field: "patch_size", reason: "patch \(patchSize.height)×\(patchSize.width) is larger than the image")
        }
        for (value, field) in [(hiddenDropoutProb, "hidden_dropout_prob"), (attentionProbsDropoutProb, "attention_probs_dropout_prob")]
        where !(0...1).contains(value) {
            throw ConfigError(field: field, reason: "must be a probability in [0, 1], got \(value)")
        }
        guard layerNormEps > 0 else { throw ConfigError(field: "layer_norm_eps", reason: "must be positive, got \(layerNormEps)") }
        guard id2label.keys.sorted() == Array(0..<id2label.count) else {
            throw ConfigError(field: "id2label", reason: "keys must be the class indices 0..<\(id2label.count)")
        }
        try checkSize(labels: numLabels)
    }

    /// The memory a model may take (`VITMSN_MEMORY_LIMIT_GB`, else the machine's memory): a config whose
    /// parameters alone need more is refused before anything is allocated.
    public static var memoryLimit: Int {
        if let text = ProcessInfo.processInfo.environment["VITMSN_MEMORY_LIMIT_GB"], let gigabytes = Double(text), gigabytes > 0 {
            return gigabytes * 1e9 >= Double(Int.max) ? .max : Int(gigabytes * 1e9)
        }
        return ProcessInfo.processInfo.physicalMemory > UInt64(Int.max) ? .max : Int(ProcessInfo.processInfo.physicalMemory)
    }

    /// The parameters of the model with `labels` classifier outputs, by the part each field sizes, in
    /// overflow-checked arithmetic (nil: more than Int holds).
    func parameterCounts(labels: Int) -> [(field: String, count: Int?)] {
        let (d, i) = (hiddenSize, intermediateSize)
        let block = Checked.sum(Checked.product(4, d, d), Checked.product(2, d, i), Checked.product(9, d), i)  // q, k, v, output, fc1, fc2, biases, 2 LayerNorms
        let grid = (imageSize.height / max(patchSize.height, 1), imageSize.width / max(patchSize.width, 1))  // before validate() too
        let positions = Checked.sum(Checked.product(grid.0, grid.1), 1).flatMap { Checked.product($0, d) }
        return [
            ("hidden_size", Checked.sum(block.flatMap { Checked.product($0, numHiddenLayers) }, Checked.product(d, numChannels, patchSize.height, patchSize.width), Checked.product(4, d))),
            ("image_size", positions),
            ("num_labels", Checked.sum(Checked.product(labels, d), labels)),
        ]
    }

    /// Refuses a model whose f32 parameters would not fit `memoryLimit`, naming the field that sizes most of them.
    func checkSize(labels: Int) throws {
        let counts = parameterCounts(labels: labels)
        let total = Checked.sum(counts.map(\.count))
        let limit = Self.memoryLimit
        if let total, total <= limit / 4 { return }
        let largest = counts.max { ($0.count ?? .max) < ($1.count ?? .max) }!
        let size = total.map { String(format: "%.3g GB", Double($0) * 4 / 1e9) } ?? "more memory than can be counted"
        throw ConfigError(field: largest.field, reason: "the model would need \(size) for its f32 parameters alone, above the limit of \(String(format: "%.3g", Double(limit) / 1e9)) GB (the machine's memory, or VITMSN_MEMORY_LIMIT_GB)")
    }

    // MARK: - Presets of the released checkpoints

    /// The shapes of `facebook/vit-msn-{small,base,large,base-4,large-7}`, as `convert_msn_to_pytorch.py` builds them.
    /// The released checkpoints' shapes, and `fashion-mnist`: a 6-layer, 192-wide ViT on 28×28 grayscale
    /// with 4×4 patches (the project's demo model).
    public static let presetNames = ["small", "base", "large", "base-4", "large-7", "fashion-mnist"]

    public static func preset(_ name: String) throws -> ViTMSNConfig {
        let short = name.replacingOccurrences(of: "facebook/", with: "").replacingOccurrences(of: "vit-msn-", with: "")
        var config = ViTMSNConfig()
        switch short {
        case "small":
            (config.hiddenSize, config.intermediateSize, config.numAttentionHeads) = (384, 1536, 6)
        case "base":
            break
        case "large", "large-7":
            (config.hiddenSize, config.intermediateSize, config.numHiddenLayers, config.numAttentionHeads) = (1024, 4096, 24, 16)
            config.hiddenDropoutProb = 0.1
            if short == "large-7" { config.patchSize = .square(7) }
        case "base-4":
            config.patchSize = .square(4)
        case "fashion-mnist":
            (config.hiddenSize, config.intermediateSize, config.numHiddenLayers, config.numAttentionHeads) = (192, 768, 6, 3)
            (config.imageSize, config.patchSize, config.numChannels) = (.square(28), .square(4), 1)
        default:
            throw ConfigError(field: "preset", reason: "unknown preset '\(name)' (known: \(presetNames.joined(separator: ", ")))")
        }
        config.architectures = ["ViTMSNModel"]
        return config
    }
}

// MARK: - config.json

extension ViTMSNConfig {
    public static func load(path: String) throws -> ViTMSNConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(field: "config.json", reason: "cannot read \(path)")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ConfigError(field: "config.json", reason: "\(path) is not a JSON object")
        }
        return try ViTMSNConfig(json: object)
    }

    public init(json: [String: Any]) throws {
        var fields = json
        func take<T>(_ key: String, _ convert: (Any) -> T?) throws -> T? {
            guard let value = fields.removeValue(forKey: key), !(value is NSNull) else { return nil }
            guard let converted = convert(value) else {
                throw ConfigError(field: key, reason: "has the wrong type (\(value))")
            }
            return converted
        }
        let int = jsonInteger
        let double = jsonNumber
        func size(_ value: Any) -> Size2? {
            if let side = int(value) { return .square(side) }
            guard let pair = value as? [Any], pair.count == 2, let h = int(pair[0]), let w = int(pair[1]) else { return nil }
            return Size2(height: h, width: w, isPair: true)
        }

        if let modelType = try take("model_type", { $0 as? String }), modelType != "vit_msn" {
            throw ConfigError(field: "model_type", reason: "is '\(modelType)', expected 'vit_msn'")
        }
        hiddenSize = try take("hidden_size", int) ?? hiddenSize
        numHiddenLayers = try take("num_hidden_layers", int) ?? numHiddenLayers
        numAttentionHeads = try take("num_attention_heads", int) ?? numAttentionHeads
        intermediateSize = try take("intermediate_size", int) ?? intermediateSize
        hiddenAct = try take("hidden_act", { $0 as? String }) ?? hiddenAct
        hiddenDropoutProb = try take("hidden_dropout_prob", double) ?? hiddenDropoutProb
        attentionProbsDropoutProb = try take("attention_probs_dropout_prob", double) ?? attentionProbsDropoutProb
        initializerRange = try take("initializer_range", double) ?? initializerRange
        layerNormEps = try take("layer_norm_eps", double) ?? layerNormEps
        imageSize = try take("image_size", size) ?? imageSize
        patchSize = try take("patch_size", size) ?? patchSize
        numChannels = try take("num_channels", int) ?? numChannels
        qkvBias = try take("qkv_bias", jsonBool) ?? qkvBias
        architectures = try take("architectures", { $0 as? [String] })
        if let name = try take("problem_type", { $0 as? String }) {
            guard let type = ProblemType(rawValue: name) else {
                let known = ProblemType.allCases.map(\.rawValue).joined(separator: ", ")
                throw ConfigError(field: "problem_type", reason: "'\(name)' is not one of \(known)")
            }
            problemType = type
        }
        // As PretrainedConfig: id2label wins; otherwise num_labels (default 2) makes generic labels.
        let numLabels = try take("num_labels", int)
        let labelNames = try take("id2label", { $0 as? [String: Any] })
        let labelIds = try take("label2id", { $0 as? [String: Any] })
        if let labelNames {
            var parsed: [Int: String] = [:]
            for (key, value) in labelNames {
                guard let index = Int(key), let label = value as? String else {
                    throw ConfigError(field: "id2label", reason: "entry \"\(key)\": \(value) is not index → name")
                }
                parsed[index] = label
            }
            id2label = parsed
            if let labelIds {
                label2id = try labelIds.mapValues {
                    guard let index = int($0) else { throw ConfigError(field: "label2id", reason: "values must be integers") }
                    return index
                }
            } else {
                label2id = Dictionary(parsed.map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
            }
        } else {
            guard (numLabels ?? 2) >= 0 else { throw ConfigError(field: "num_labels", reason: "must not be negative") }
            try checkSize(labels: numLabels ?? 2)  // before a billion label names are made
            setNumLabels(numLabels ?? 2)
        }
        extraFields = fields
        try validate()
    }

    /// The JSON object `save_pretrained` would write, including every key that was read but not modelled.
    public func jsonObject() -> [String: Any] {
        var object = extraFields
        object["model_type"] = "vit_msn"
        object["hidden_size"] = hiddenSize
        object["num_hidden_layers"] = numHiddenLayers
        object["num_attention_heads"] = numAttentionHeads
        object["intermediate_size"] = intermediateSize
        object["hidden_act"] = hiddenAct
        object["hidden_dropout_prob"] = hiddenDropoutProb
        object["attention_probs_dropout_prob"] = attentionProbsDropoutProb
        object["initializer_range"] = initializerRange
        object["layer_norm_eps"] = layerNormEps
        object["image_size"] = imageSize.jsonValue
        object["patch_size"] = patchSize.jsonValue
        object["num_channels"] = numChannels
        object["qkv_bias"] = qkvBias
        object["id2label"] = Dictionary(uniqueKeysWithValues: id2label.map { (String($0), $1) })
        object["label2id"] = label2id
        if let problemType { object["problem_type"] = problemType.rawValue }
        if let architectures { object["architectures"] = architectures }
        return object
    }

    public func save(path: String) throws {
        var data = try JSONSerialization.data(withJSONObject: jsonObject(), options: [.prettyPrinted, .sortedKeys])
        data.append(0x0A)
        try writeAtomically(data, to: path)
    }
}

// MARK: - Cost

extension ViTMSNConfig {
    /// Floating-point operations (multiply and add counted apart) of one image's forward pass at H×W.
    public func forwardFLOPs(height: Int, width: Int) -> Double {
        let n = Double((height / patchSize.height) * (width / patchSize.width))
        let s = n + 1
        let (d, i) = (Double(hiddenSize), Double(intermediateSize))
        let patch = 2 * n * Double(numChannels * patchSize.height * patchSize.width) * d
        let perLayer = 2 * s * d * d * 4 + 2 * s * d * i * 2 + 2 * 2 * s * s * d
        return patch + Double(numHiddenLayers) * perLayer
    }
}

/// Sizes from files and configs multiplied and added without trapping: nil once a result leaves Int.
enum Checked {
    static func product(_ factors: Int?...) -> Int? { product(factors) }
    static func product(_ factors: [Int?]) -> Int? {
        factors.reduce(Int?(1)) { total, factor in
            guard let total, let factor else { return nil }
            let (value, overflow) = total.multipliedReportingOverflow(by: factor)
            return overflow ? nil : value
        }
    }

    static func sum(_ terms: Int?...) -> Int? { sum(terms) }
    static func sum(_ terms: [Int?]) -> Int? {
        terms.reduce(Int?(0)) { total, term in
            guard let total, let term else { return nil }
            let (value, overflow) = total.addingReportingOverflow(term)
            return overflow ? nil : value
        }
    }
}
