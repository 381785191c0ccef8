import Foundation
import ViTCore
import ViTIO
import ViTModel

/// What MSN trains: the encoder (Transformers names), its projection head (`fc.*`, as the official
/// checkpoints name it) and the prototypes.
public final class MSNModel: NN.Module {
    public let encoder: ViTMSNModel
    public let head: MSNProjectionHead
    public var prototypes: Tensor // (K, O)
    public var prototypesGradient: Tensor?

    public init(encoder: ViTMSNModel, head: MSNProjectionHead, prototypes: Tensor) {
        (self.encoder, self.head, self.prototypes) = (encoder, head, prototypes)
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try encoder.visitParameters(visit)
        try head.visitParameters { name, value, gradient in try visit("fc." + name, &value, &gradient) }
        try visit("prototypes", &prototypes, &prototypesGradient)
    }

    /// The encoder of a model directory, with the head and prototypes of its `msn_head.safetensors` (what
    /// `vitmsn convert` writes from an MSN checkpoint) or of `prototypesPath`; missing parts are initialised
    /// as the official code does (trunc-normal 0.02 Linear weights, zero biases, prototypes U(±1/√O)).
    public static func load(directory: String, prototypesPath: String? = nil, hiddenSize: Int = 2048, outputSize: Int = 256, prototypeCount: Int = 1024, seed: UInt64 = 0) throws -> MSNModel {
        let encoder = try ViTMSNModel.load(directory: directory)
        let headPath = directory + "/msn_head.safetensors"
        let stored = FileManager.default.fileExists(atPath: headPath) ? try SafetensorsFile(path: headPath) : nil
        let hidden = stored?.info("fc.fc1.weight").map { $0.shape[0] } ?? hiddenSize
        let output = stored?.info("fc.fc3.weight").map { $0.shape[0] } ?? outputSize
        let head = MSNProjectionHead(inputSize: encoder.config.hiddenSize, hiddenSize: hidden, outputSize: output)
        var generator = SeededGenerator(seed: seed)
        if let stored, stored.info("fc.fc1.weight") != nil {
            try head.visitParameters { name, value in value = try checkedTensor(stored, "fc." + name, shape: value.shape) }
            try head.visitBuffers { name, value in value = try checkedTensor(stored, "fc." + name, shape: value.shape) }
        } else {
            for layer in [head.fc1, head.fc2, head.fc3] { layer.initialize(std: 0.02, using: &generator) }
        }
        var prototypes: Tensor
        if let prototypesPath {
            prototypes = try SafetensorsFile(path: prototypesPath).floatTensor("prototypes")
        } else if let stored, stored.info("prototypes") != nil {
            prototypes = try stored.floatTensor("prototypes")
        } else {
            let bound = 1 / Float(output).squareRoot()
            prototypes = Tensor(shape: [prototypeCount, output], scalars: (0..<(prototypeCount * output)).map { _ in Float.random(in: -bound...bound, using: &generator) })
        }
        guard prototypes.rank == 2, prototypes.shape[1] == output else {
            throw TrainingError("prototypes of shape \(prototypes.shape) do not match the head's output size \(output)")
        }
        return MSNModel(encoder: encoder, head: head, prototypes: prototypes)
    }
}

func checkedTensor(_ file: SafetensorsFile, _ name: String, shape: [Int]) throws -> Tensor {
    guard let info = file.info(name) else { throw TrainingError("\(file.location): missing '\(name)'") }
    guard info.shape == shape else { throw TrainingError("\(file.location): '\(name)' has shape \(info.shape), expected \(shape)") }
    return try file.floatTensor(name)
}

/// The views of one MSN step: `target` (B, C, H, W) for the target encoder, `anchor` (B, C, H, W) with the
/// patches `keep` kept (one set for the whole batch, as the official code draws it), and optional `focal`
/// views (F·B, C, h, w), view-major.
public struct MSNViews {
    public var target: Tensor
    public var anchor: Tensor
    public var focal: Tensor?
    public var keep: [Int]?

    public init(target: Tensor, anchor: Tensor, focal: Tensor? = nil, keep: [Int]? = nil) {
        (self.target, self.anchor, self.focal, self.keep) = (target, anchor, focal, keep)
    }
}

extension MSNViews {
    /// Views from a safetensors file: `target`, `anchor`, optionally `focal` and `keep` (I64).
    public init(file path: String) throws {
        let file = try SafetensorsFile(path: path)
        for name in ["target", "anchor"] where file.info(name) == nil { throw TrainingError("\(path): no '\(name)' tensor") }
        self.init(
            target: try file.floatTensor("target"), anchor: try file.floatTensor("anchor"),
            focal: file.info("focal") == nil ? nil : try file.floatTensor("focal"),
            keep: file.info("keep") == nil ? nil : try file.integerValues("keep").map(Int.init))
    }
}

/// `vitmsn msn-step`: one forward and backward of `model` (its own encoder and head as the target, which an
/// EMA copy equals at the first step), written to `output` as `loss`, `ploss`, `rloss`, `sloss`, `targets`
/// and `grad.<name>` for every trainable tensor.
@discardableResult
public func writeMSNStep(_ model: MSNModel, views: MSNViews, settings: MSNLossSettings, to output: String) throws -> MSNLossResult {
    model.zeroGradients()
    let result = try msnForwardBackward(model, targetEncoder: model.encoder, targetHead: model.head, views: views, settings: settings)
    var records = [("loss", result.loss), ("ploss", result.ploss), ("rloss", result.rloss), ("sloss", result.sloss)]
        .map { SafetensorsRecord(name: $0.0, tensor: Tensor(shape: [], scalars: [$0.1])) }
    records.append(SafetensorsRecord(name: "targets", tensor: result.targets))
    model.visitParameters { name, _, gradient in records.append(SafetensorsRecord(name: "grad." + name, tensor: gradient!)) }
    try SafetensorsWriter.write(records, to: output)
    return result
}

/// One MSN forward and backward: the target projections from `targetEncoder`/`targetHead` (no gradient,
/// head in training mode), the anchor projections from `model` per resolution group (the masked anchors,
/// then the focal views with interpolated positions; BatchNorm statistics per group), the loss, and the
/// gradients of every trainable tensor of `model`, accumulated.
public func msnForwardBackward(
    _ model: MSNModel, targetEncoder: ViTMSNModel, targetHead: MSNProjectionHead, views: MSNViews, settings: MSNLossSettings
) throws -> MSNLossResult {
    let batch = views.target.shape[0]
    guard views.anchor.shape[0] == batch, views.focal.map({ $0.shape[0] % batch == 0 }) ?? true else {
        throw TrainingError("views: target and anchor need the same batch, focal a multiple of it (view-major)")
    }
    let targetCLS = clsTokens(try targetEncoder.forward(pixelValues: views.target).lastHiddenState)
    let targets = targetHead.forward(targetCLS, training: true, parallelism: targetEncoder.parallelism).output
    var eval: NN.Dropout? = nil
    var groups: [(pixels: Tensor, keep: [[Int]]?, interpolate: Bool)] = [(views.anchor, views.keep.map { k in Array(repeating: k, count: batch) }, false)]
    if let focal = views.focal { groups.append((focal, nil, true)) }
    var forwards: [(encoder: ViTMSNActivations, head: MSNProjectionHead.Activations, sequence: Int, projection: Tensor)] = []
    for group in groups {
        let (last, activations) = try model.encoder.forwardTraining(
            pixelValues: group.pixels, keep: group.keep, interpolatePosEncoding: group.interpolate, dropout: &eval)
        let (projection, headActivations) = model.head.forward(clsTokens(last), training: true, parallelism: model.encoder.parallelism)
        forwards.append((activations, headActivations, last.shape[1], projection))
    }
    let anchors = Tensor.concatenated(forwards.map(\.projection)) // the groups' rows, in order
    let result = msnLoss(anchors: anchors, targets: targets, prototypes: model.prototypes, settings: settings)
    addInPlace(&model.prototypesGradient, result.prototypeGradient)
    let dim = model.encoder.config.hiddenSize
    var offset = 0
    for forward in forwards {
        let rows = forward.projection.shape[0]
        let clsGradient = model.head.backward(
            forward.head, outputGradient: result.anchorGradient.rows(offset..<(offset + rows)), parallelism: model.encoder.parallelism)
        let lastGradient = clsGradient.withUnsafeBufferPointer { clsTokensBackward($0.baseAddress!, batch: rows, sequence: forward.sequence, dim: dim) }
        model.encoder.backward(forward.encoder, lastHiddenStateGradient: lastGradient)
        offset += rows
    }
    return result
}

func addInPlace(_ gradient: inout Tensor?, _ value: Tensor) {
    precondition(gradient != nil, "zeroGradients() allocates the gradients before a backward pass")
    gradient!.withUnsafeMutableBufferPointer { g in value.withUnsafeBufferPointer { v in for i in g.indices { g[i] += v[i] } } }
}
