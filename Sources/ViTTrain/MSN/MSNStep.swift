import Foundation
import ViTCore
import ViTIO
import ViTDistributed
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
///
/// The encoders run shard by shard (`shards`: ranges of the views' samples; one shard by default); the heads
/// and the loss run on the CLS tokens of the whole global batch, gathered from every rank of `communicator`,
/// so BatchNorm (SyncBatchNorm's global statistics), me-max's average and Sinkhorn's sums are the global
/// batch's on every rank, and the head's and prototypes' gradients need no reduction. `gradients` takes each
/// shard's encoder gradients into its tree and all-reduce (call its `finish()` before using them).
public func msnForwardBackward(
    _ model: MSNModel, targetEncoder: ViTMSNModel, targetHead: MSNProjectionHead, views: MSNViews, settings: MSNLossSettings,
    shards: [Range<Int>]? = nil, gradients: ShardedGradients? = nil, communicator: Communicator = SingleProcess()
) throws -> MSNLossResult {
    let batch = views.target.shape[0]
    guard views.anchor.shape[0] == batch, views.focal.map({ $0.shape[0] % batch == 0 }) ?? true else {
        throw TrainingError("views: target and anchor need the same batch, focal a multiple of it (view-major)")
    }
    let focalViews = (views.focal?.shape[0] ?? 0) / max(batch, 1)
    let shards = shards ?? [0..<batch]
    let dim = model.encoder.config.hiddenSize
    // Per shard: the target's CLS, then the anchor group's and the focal group's, with their activations.
    var eval: NN.Dropout? = nil
    var forwards: [(group: Int, samples: Range<Int>, activations: ViTMSNActivations, sequence: Int)] = []
    var cls: [[Tensor]] = [[], [], []] // target, anchor, focal: each shard's CLS rows, view-major within it
    for samples in shards where !samples.isEmpty {
        cls[0].append(clsTokens(try targetEncoder.forward(pixelValues: views.target.rows(samples)).lastHiddenState))
        var groups: [(pixels: Tensor, keep: [[Int]]?, interpolate: Bool)] = [(views.anchor.rows(samples), views.keep.map { k in Array(repeating: k, count: samples.count) }, false)]
        if let focal = views.focal { groups.append((viewRows(focal, views: focalViews, batch: batch, samples: samples), nil, true)) }
        for (group, g) in groups.enumerated() {
            let (last, activations) = try model.encoder.forwardTraining(pixelValues: g.pixels, keep: g.keep, interpolatePosEncoding: g.interpolate, dropout: &eval)
            cls[1 + group].append(clsTokens(last))
            forwards.append((group, samples, activations, last.shape[1]))
        }
    }
    // This rank's CLS rows, view-major: the target's, the anchors', then the focal views'; gathered globally.
    let viewsPerPart = [1, 1, focalViews]
    let computed = shards.filter { !$0.isEmpty }
    let local = Tensor.concatenated((0..<3).flatMap { part in
        (0..<viewsPerPart[part]).flatMap { v in zip(cls[part], computed).map { tokens, samples in tokens.rows((v * samples.count)..<((v + 1) * samples.count)) } }
    })
    let (global, mine, globalBatch) = communicator.gatherViewMajor(local, views: 2 + focalViews)
    let targets = targetHead.forward(global.rows(0..<globalBatch), training: true, parallelism: targetEncoder.parallelism).output
    var heads: [(activations: MSNProjectionHead.Activations, rows: Range<Int>)] = []
    var projections: [Tensor] = []
    for rows in [globalBatch..<(2 * globalBatch), (2 * globalBatch)..<global.shape[0]] where !rows.isEmpty {
        let (projection, activations) = model.head.forward(global.rows(rows), training: true, parallelism: model.encoder.parallelism)
        heads.append((activations, rows))
        projections.append(projection)
    }
    let result = msnLoss(anchors: Tensor.concatenated(projections), targets: targets, prototypes: model.prototypes, settings: settings)
    addInPlace(&model.prototypesGradient, result.prototypeGradient)
    var offset = 0
    let clsGradients = heads.map { head in
        let rows = head.rows.count
        defer { offset += rows }
        return model.head.backward(head.activations, outputGradient: result.anchorGradient.rows(offset..<(offset + rows)), parallelism: model.encoder.parallelism)
    }
    // Back through the encoder, shard by shard, from this rank's rows of the CLS gradients.
    let groupViews = [1, focalViews]
    let localGradients = clsGradients.enumerated().map { group, gradient in
        viewRows(gradient, views: groupViews[group], batch: globalBatch, samples: mine)
    }
    gradients?.begin(shards: shards.count)
    var next = 0
    for samples in shards {
        while next < forwards.count, forwards[next].samples == samples {
            let forward = forwards[next]
            let views = groupViews[forward.group]
            let rows = viewRows(localGradients[forward.group], views: views, batch: batch, samples: samples)
            let lastGradient = rows.withUnsafeBufferPointer { clsTokensBackward($0.baseAddress!, batch: rows.shape[0], sequence: forward.sequence, dim: dim) }
            let complete = next + 1 == forwards.count || forwards[next + 1].samples != samples // the shard's last group
            model.encoder.backward(forward.activations, lastHiddenStateGradient: lastGradient, gradientsReady: complete ? gradients?.ready : nil)
            next += 1
        }
        gradients?.endShard()
    }
    return result
}

func addInPlace(_ gradient: inout Tensor?, _ value: Tensor) {
    precondition(gradient != nil, "zeroGradients() allocates the gradients before a backward pass")
    gradient!.withUnsafeMutableBufferPointer { g in value.withUnsafeBufferPointer { v in for i in g.indices { g[i] += v[i] } } }
}
