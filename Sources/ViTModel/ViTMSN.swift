// ViT-MSN, ported from Hugging Face Transformers 4.57 `models/vit_msn/modeling_vit_msn.py`.
// One type per Transformers submodule; parameter names are the checkpoint's. Notation in shape comments:
// B batch, C channels, H×W pixels, P patch, N patches, S = N + 1 tokens, D hidden, I intermediate, L layers.
import ViTCore

/// An input Transformers would reject, with Transformers' own message where it has one.
public struct ViTMSNError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct ViTMSNModelOutput {
    /// (B, S, D), after the final LayerNorm.
    public var lastHiddenState: Tensor
    /// L + 1 tensors (B, S, D): the embeddings, then each layer's output; the last is before the final LayerNorm.
    public var hiddenStates: [Tensor]?
    /// L tensors (B, heads, S, S): attention probabilities after the head mask.
    public var attentions: [Tensor]?
}

// MARK: - Embeddings

/// Cuts the image into P×P patches and projects each to D (a stride-P convolution, done as one GEMM).
public final class ViTMSNPatchEmbeddings: Module {
    public let projection: Linear // weight (D, C, P, P), bias (D)
    let config: ViTMSNConfig

    init(config: ViTMSNConfig) {
        self.config = config
        let p = config.patchSize
        projection = Linear(
            config.numChannels * p.height * p.width, config.hiddenSize,
            weightShape: [config.hiddenSize, config.numChannels, p.height, p.width]
        )
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("projection", projection, visit)
    }

    /// pixels (B, C, H, W) → patch embeddings (B·N, D), N = (H/P)·(W/P) in row-major grid order, and the
    /// flattened patches (B·N, C·P·P) they were projected from.
    func forward(_ pixels: Tensor, interpolatePosEncoding: Bool, parallelism: Parallelism) throws -> (patches: Buffer, embeddings: Buffer, gridHeight: Int, gridWidth: Int) {
        guard pixels.rank == 4 else {
            throw ViTMSNError("pixel_values must have shape (batch_size, num_channels, height, width), got \(pixels.shape)")
        }
        let (batch, channels, height, width) = (pixels.shape[0], pixels.shape[1], pixels.shape[2], pixels.shape[3])
        guard channels == config.numChannels else {
            throw ViTMSNError(
                "Make sure that the channel dimension of the pixel values match with the one set in the configuration. Expected \(config.numChannels) but got \(channels)."
            )
        }
        if !interpolatePosEncoding, height != config.imageSize.height || width != config.imageSize.width {
            throw ViTMSNError("Input image size (\(height)*\(width)) doesn't match model (\(config.imageSize.height)*\(config.imageSize.width)).")
        }
        let (gridHeight, gridWidth) = (height / config.patchSize.height, width / config.patchSize.width)
        guard gridHeight > 0, gridWidth > 0 else {
            throw ViTMSNError("Input image size (\(height)*\(width)) is smaller than one \(config.patchSize.height)×\(config.patchSize.width) patch.")
        }
        let rows = batch * gridHeight * gridWidth
        let patches = Buffer(rows * projection.inFeatures)
        pixels.withUnsafeBufferPointer { px in
            forEachPatchRow(pixelShape: pixels.shape) { pixelOffset, patchOffset in
                (patches.pointer + patchOffset).update(from: px.baseAddress! + pixelOffset, count: config.patchSize.width)
            }
        }
        let embeddings = Buffer(rows * config.hiddenSize)
        projection.forward(patches.pointer, rows: rows, into: embeddings.pointer, parallelism: parallelism)
        return (patches, embeddings, gridHeight, gridWidth)
    }

    /// The backward of `forward`: from the embeddings' gradient (B·N, D), accumulates the projection's
    /// gradients and, when `pixelGradient` (B, C, H, W) is given, writes the pixels' gradient (zero for pixels
    /// outside the patch grid).
    func backward(
        patches: Buffer, gradient: UnsafePointer<Float>, pixelShape: [Int],
        pixelGradient: UnsafeMutablePointer<Float>?, parallelism: Parallelism
    ) {
        let rows = patches.count / projection.inFeatures
        let patchGradient = pixelGradient.map { _ in Buffer(patches.count) }
        projection.backward(
            input: patches.pointer, outputGradient: gradient, rows: rows, inputGradient: patchGradient?.pointer, parallelism: parallelism)
        guard let pixelGradient, let patchGradient else { return }
        pixelGradient.update(repeating: 0, count: Tensor.elementCount(pixelShape))
        forEachPatchRow(pixelShape: pixelShape) { pixelOffset, patchOffset in
            (pixelGradient + pixelOffset).update(from: patchGradient.pointer + patchOffset, count: config.patchSize.width)
        }
    }

    /// Calls `body(pixelOffset, patchOffset)` for every P-pixel row of every patch: the row starting at
    /// `pixelOffset` in (B, C, H, W) is at `patchOffset` in (B·N, C·P·P), each patch flattened (c, ky, kx).
    private func forEachPatchRow(pixelShape: [Int], _ body: (_ pixelOffset: Int, _ patchOffset: Int) -> Void) {
        let (batch, channels, height, width) = (pixelShape[0], pixelShape[1], pixelShape[2], pixelShape[3])
        let (ph, pw) = (config.patchSize.height, config.patchSize.width)
        let (gridHeight, gridWidth) = (height / ph, width / pw)
        var patchOffset = 0
        for b in 0..<batch {
            for gy in 0..<gridHeight {
                for gx in 0..<gridWidth {
                    for c in 0..<channels {
                        for ky in 0..<ph {
                            body(((b * channels + c) * height + gy * ph + ky) * width + gx * pw, patchOffset)
                            patchOffset += pw
                        }
                    }
                }
            }
        }
    }
}

/// CLS token + patch embeddings (+ optional mask token) + position embeddings.
public final class ViTMSNEmbeddings: Module {
    public var clsToken: Tensor            // (1, 1, D)
    public var maskToken: Tensor?          // (1, 1, D), only in models built with a mask token
    public var positionEmbeddings: Tensor  // (1, N_config + 1, D)
    public var clsTokenGradient, maskTokenGradient, positionEmbeddingsGradient: Tensor?
    public let patchEmbeddings: ViTMSNPatchEmbeddings
    let config: ViTMSNConfig

    init(config: ViTMSNConfig, useMaskToken: Bool) {
        self.config = config
        clsToken = Tensor(zeros: [1, 1, config.hiddenSize])
        maskToken = useMaskToken ? Tensor(zeros: [1, 1, config.hiddenSize]) : nil
        positionEmbeddings = Tensor(zeros: [1, config.numPatches + 1, config.hiddenSize])
        patchEmbeddings = ViTMSNPatchEmbeddings(config: config)
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try visit("cls_token", &clsToken, &clsTokenGradient)
        if maskToken != nil { try visit("mask_token", &maskToken!, &maskTokenGradient) }
        try visit("position_embeddings", &positionEmbeddings, &positionEmbeddingsGradient)
        try self.visit("patch_embeddings", patchEmbeddings, visit)
    }

    /// The position table for a gridHeight×gridWidth input: the stored one, or (Transformers ≥ 4.45) its
    /// patch part resized bicubically. Returns (1 + gridHeight·gridWidth, D).
    func interpolatePosEncoding(gridHeight: Int, gridWidth: Int, height: Int, width: Int) throws -> Tensor {
        let numPositions = positionEmbeddings.shape[1] - 1
        if gridHeight * gridWidth == numPositions && height == width { return positionEmbeddings }
        guard !config.patchSize.isPair || config.patchSize.height == config.patchSize.width else {
            throw ViTMSNError("interpolate_pos_encoding needs a square patch_size, got \(config.patchSize.height)×\(config.patchSize.width)")
        }
        let side = Int(Double(numPositions).squareRoot())
        guard side * side == numPositions else {
            throw ViTMSNError("interpolate_pos_encoding needs a square grid of position embeddings, got \(numPositions) positions")
        }
        let dim = config.hiddenSize
        var table = Tensor(zeros: [1, 1 + gridHeight * gridWidth, dim])
        positionEmbeddings.withUnsafeBufferPointer { pos in
            table.withUnsafeMutableBufferPointer { out in
                out.baseAddress!.update(from: pos.baseAddress!, count: dim) // the CLS position is kept as is
                bicubicResize(
                    pos.baseAddress! + dim, inHeight: side, inWidth: side,
                    into: out.baseAddress! + dim, outHeight: gridHeight, outWidth: gridWidth, channels: dim
                )
            }
        }
        return table
    }

    /// pixels (B, C, H, W) → embeddings (B, S, D), with the flattened patches and the grid they came from.
    func forward(_ pixels: Tensor, boolMaskedPos: Tensor?, interpolatePosEncoding: Bool, parallelism: Parallelism) throws -> (hidden: Buffer, sequence: Int, patches: Buffer, gridHeight: Int, gridWidth: Int) {
        let (flatPatches, patches, gridHeight, gridWidth) = try patchEmbeddings.forward(
            pixels, interpolatePosEncoding: interpolatePosEncoding, parallelism: parallelism)
        let batch = pixels.shape[0]
        let numPatches = gridHeight * gridWidth
        let sequence = numPatches + 1
        let dim = config.hiddenSize

        if let boolMaskedPos {
            guard let maskToken else {
                throw ViTMSNError("bool_masked_pos needs a model with a mask token (embeddings.mask_token), and this one has none")
            }
            guard boolMaskedPos.shape == [batch, numPatches] else {
                throw ViTMSNError("bool_masked_pos must have shape [\(batch), \(numPatches)] (batch, patches), got \(boolMaskedPos.shape)")
            }
            // Masked patches take the mask token; they still receive their position embedding below.
            boolMaskedPos.withUnsafeBufferPointer { mask in
                maskToken.withUnsafeBufferPointer { token in
                    for row in 0..<(batch * numPatches) where mask[row] != 0 {
                        (patches.pointer + row * dim).update(from: token.baseAddress!, count: dim)
                    }
                }
            }
        }

        let positions = interpolatePosEncoding
            ? try self.interpolatePosEncoding(
                gridHeight: gridHeight, gridWidth: gridWidth, height: pixels.shape[2], width: pixels.shape[3])
            : positionEmbeddings
        let hidden = Buffer(batch * sequence * dim)
        positions.withUnsafeBufferPointer { pos in
            clsToken.withUnsafeBufferPointer { cls in
                for b in 0..<batch {
                    let out = hidden.pointer + b * sequence * dim
                    out.update(from: cls.baseAddress!, count: dim)
                    (out + dim).update(from: patches.pointer + b * numPatches * dim, count: numPatches * dim)
                    addInPlace(out, pos.baseAddress!, count: sequence * dim)
                }
            }
        }
        return (hidden, sequence, flatPatches, gridHeight, gridWidth)
    }

    /// Training forward: `forward`, then only the CLS token and the patches listed in `keep` (MSN's patch
    /// dropping: per image, K indices into the N patches), then hidden dropout. Returns (B, 1 + K, D), or
    /// (B, S, D) without `keep`.
    func forwardTraining(
        _ pixels: Tensor, keep: [[Int]]?, interpolatePosEncoding: Bool, dropout: inout Dropout?, parallelism: Parallelism
    ) throws -> (hidden: Buffer, sequence: Int, activations: EmbeddingActivations) {
        let full = try forward(pixels, boolMaskedPos: nil, interpolatePosEncoding: interpolatePosEncoding, parallelism: parallelism)
        let batch = pixels.shape[0]
        let dim = config.hiddenSize
        var hidden = full.hidden
        var sequence = full.sequence
        if let keep {
            let numPatches = full.sequence - 1
            guard keep.count == batch, let kept = keep.first?.count, keep.allSatisfy({ $0.count == kept }),
                  keep.allSatisfy({ $0.allSatisfy { (0..<numPatches).contains($0) } }) else {
                throw ViTMSNError("keep must list, for each of the \(batch) images, the same number of patch indices in 0..<\(numPatches)")
            }
            sequence = 1 + kept
            hidden = Buffer(batch * sequence * dim)
            for b in 0..<batch {
                for (j, token) in ([0] + keep[b].map { $0 + 1 }).enumerated() {
                    (hidden.pointer + (b * sequence + j) * dim).update(from: full.hidden.pointer + (b * full.sequence + token) * dim, count: dim)
                }
            }
        }
        let probability = dropout?.hiddenProbability ?? 0
        let dropMultipliers = dropout?.apply(hidden.pointer, count: batch * sequence * dim, probability: probability)
        let numPositions = positionEmbeddings.shape[1] - 1
        let activations = EmbeddingActivations(
            pixelShape: pixels.shape, patches: full.patches, gridHeight: full.gridHeight, gridWidth: full.gridWidth,
            positionsResized: interpolatePosEncoding && !(full.sequence - 1 == numPositions && pixels.shape[2] == pixels.shape[3]),
            keep: keep, dropMultipliers: dropMultipliers)
        return (hidden, sequence, activations)
    }

    /// The backward of `forwardTraining`: from the gradient of its output (B, S', D), accumulates the CLS,
    /// position and projection gradients, and writes the pixels' gradient when `pixelGradient` is given.
    func backward(
        _ gradient: UnsafePointer<Float>, sequence: Int, activations a: EmbeddingActivations,
        pixelGradient: UnsafeMutablePointer<Float>?, parallelism: Parallelism
    ) {
        let batch = a.pixelShape[0]
        let dim = config.hiddenSize
        let numPatches = a.gridHeight * a.gridWidth
        let fullSequence = numPatches + 1
        // Back to every token of every image (dropped patches get zero), through the dropout multipliers.
        let full = Buffer(zeros: batch * fullSequence * dim)
        for b in 0..<batch {
            let tokens = a.keep.map { [0] + $0[b].map { $0 + 1 } } ?? Array(0..<fullSequence)
            for (j, token) in tokens.enumerated() {
                let source = (b * sequence + j) * dim
                let target = full.pointer + (b * fullSequence + token) * dim
                target.update(from: gradient + source, count: dim)
                if let m = a.dropMultipliers { for i in 0..<dim { target[i] *= m.pointer[source + i] } }
            }
        }
        // CLS token and the position table (summed over the batch), the table back through its resize.
        let table = Buffer(zeros: fullSequence * dim)
        for b in 0..<batch { addInPlace(table.pointer, full.pointer + b * fullSequence * dim, count: fullSequence * dim) }
        addInPlace(clsTokenGradient!.uniqueBaseAddress(), table.pointer, count: dim)
        let dPositions = positionEmbeddingsGradient!.uniqueBaseAddress()
        if a.positionsResized {
            let side = Int(Double(positionEmbeddings.shape[1] - 1).squareRoot())
            addInPlace(dPositions, table.pointer, count: dim)
            bicubicResizeBackward(
                table.pointer + dim, outHeight: a.gridHeight, outWidth: a.gridWidth,
                into: dPositions + dim, inHeight: side, inWidth: side, channels: dim)
        } else {
            addInPlace(dPositions, table.pointer, count: fullSequence * dim)
        }
        // Patch tokens → the projection.
        let patchGradient = Buffer(batch * numPatches * dim)
        for b in 0..<batch {
            (patchGradient.pointer + b * numPatches * dim).update(from: full.pointer + (b * fullSequence + 1) * dim, count: numPatches * dim)
        }
        patchEmbeddings.backward(
            patches: a.patches, gradient: patchGradient.pointer, pixelShape: a.pixelShape,
            pixelGradient: pixelGradient, parallelism: parallelism)
    }
}

/// What `ViTMSNEmbeddings.forwardTraining` keeps for its backward.
final class EmbeddingActivations {
    let pixelShape: [Int]
    let patches: Buffer            // (B·N, C·P·P) flattened patches: the projection's input
    let gridHeight, gridWidth: Int
    let positionsResized: Bool     // whether the position table was interpolated to the grid
    let keep: [[Int]]?             // patches kept per image, when some were dropped
    let dropMultipliers: Buffer?   // hidden dropout on the output

    init(pixelShape: [Int], patches: Buffer, gridHeight: Int, gridWidth: Int, positionsResized: Bool, keep: [[Int]]?, dropMultipliers: Buffer?) {
        (self.pixelShape, self.patches, self.gridHeight, self.gridWidth) = (pixelShape, patches, gridHeight, gridWidth)
        (self.positionsResized, self.keep, self.dropMultipliers) = (positionsResized, keep, dropMultipliers)
    }
}

// MARK: - Encoder

/// Scratch memory for one forward pass through the encoder, reused by every layer.
final class EncoderWorkspace {
    let normed, query, key, value, context: Buffer // (B·S, D) each
    let intermediate: Buffer                        // (B·S, I)
    let scores: Buffer                              // (threads, queryBlock, S), or unused when attentions are returned
    let parallelism: Parallelism
    /// (B·S, D): a residual branch's output before dropout, or its gradient after (training only).
    lazy var branch = Buffer(normed.count)

    /// `scoreCount` overrides the attention scratch size (the backward needs S·S per thread).
    init(tokens: Int, sequence: Int, config: ViTMSNConfig, parallelism: Parallelism, scoreCount: Int? = nil) {
        self.parallelism = parallelism
        (normed, query, key, value, context) = (
            Buffer(tokens * config.hiddenSize), Buffer(tokens * config.hiddenSize), Buffer(tokens * config.hiddenSize),
            Buffer(tokens * config.hiddenSize), Buffer(tokens * config.hiddenSize)
        )
        intermediate = Buffer(tokens * config.intermediateSize)
        scores = Buffer(scoreCount ?? attentionScratchCount(sequence: sequence, threads: parallelism.threads))
    }
}

/// `attention.attention`: query, key and value projections and the scaled-dot-product core.
public final class ViTMSNSelfAttention: Module {
    public let query, key, value: Linear // (D, D) each
    let heads: Int
    let headDim: Int

    init(config: ViTMSNConfig) {
        query = Linear(config.hiddenSize, config.hiddenSize, bias: config.qkvBias)
        key = Linear(config.hiddenSize, config.hiddenSize, bias: config.qkvBias)
        value = Linear(config.hiddenSize, config.hiddenSize, bias: config.qkvBias)
        heads = config.numAttentionHeads
        headDim = config.headDim
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("query", query, visit)
        try self.visit("key", key, visit)
        try self.visit("value", value, visit)
    }

    /// workspace.normed (B·S, D) → workspace.context (B·S, D)
    func forward(batch: Int, sequence: Int, headMask: [Float]?, attentions: UnsafeMutablePointer<Float>?, workspace w: EncoderWorkspace) {
        let tokens = batch * sequence
        query.forward(w.normed.pointer, rows: tokens, into: w.query.pointer, parallelism: w.parallelism)
        key.forward(w.normed.pointer, rows: tokens, into: w.key.pointer, parallelism: w.parallelism)
        value.forward(w.normed.pointer, rows: tokens, into: w.value.pointer, parallelism: w.parallelism)
        multiHeadAttention(
            query: w.query.pointer, key: w.key.pointer, value: w.value.pointer, context: w.context.pointer,
            batch: batch, sequence: sequence, heads: heads, headDim: headDim,
            scale: 1 / Float(headDim).squareRoot(), headMask: headMask,
            probabilities: attentions, scratch: w.scores.pointer, parallelism: w.parallelism
        )
    }
}

/// `attention.output`: the output projection. Transformers adds the residual in `ViTMSNLayer`; here the
/// projection accumulates straight into the residual stream.
public final class ViTMSNSelfOutput: Module {
    public let dense: Linear // (D, D)

    init(config: ViTMSNConfig) { dense = Linear(config.hiddenSize, config.hiddenSize) }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("dense", dense, visit)
    }
}

public final class ViTMSNAttention: Module {
    public let attention: ViTMSNSelfAttention
    public let output: ViTMSNSelfOutput

    init(config: ViTMSNConfig) {
        attention = ViTMSNSelfAttention(config: config)
        output = ViTMSNSelfOutput(config: config)
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("attention", attention, visit)
        try self.visit("output", output, visit)
    }
}

/// `intermediate`: D → I projection and the activation.
public final class ViTMSNIntermediate: Module {
    public let dense: Linear // (I, D)
    let activation: Activation

    init(config: ViTMSNConfig) {
        dense = Linear(config.hiddenSize, config.intermediateSize)
        activation = config.activation
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("dense", dense, visit)
    }

    /// y (rows, I) = act(x (rows, D) · Wᵀ + b), the activation fused into the product.
    func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, parallelism: Parallelism) {
        dense.forward(x, rows: rows, into: y, activation: activation, parallelism: parallelism)
    }
}

/// `output`: I → D projection plus the residual.
public final class ViTMSNOutput: Module {
    public let dense: Linear // (D, I)

    init(config: ViTMSNConfig) { dense = Linear(config.intermediateSize, config.hiddenSize) }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("dense", dense, visit)
    }
}

/// One pre-LayerNorm transformer block.
public final class ViTMSNLayer: Module {
    public let attention: ViTMSNAttention
    public let intermediate: ViTMSNIntermediate
    public let output: ViTMSNOutput
    public let layernormBefore: LayerNorm
    public let layernormAfter: LayerNorm

    init(config: ViTMSNConfig) {
        attention = ViTMSNAttention(config: config)
        intermediate = ViTMSNIntermediate(config: config)
        output = ViTMSNOutput(config: config)
        layernormBefore = LayerNorm(config.hiddenSize, eps: Float(config.layerNormEps))
        layernormAfter = LayerNorm(config.hiddenSize, eps: Float(config.layerNormEps))
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("attention", attention, visit)
        try self.visit("intermediate", intermediate, visit)
        try self.visit("output", output, visit)
        try self.visit("layernorm_before", layernormBefore, visit)
        try self.visit("layernorm_after", layernormAfter, visit)
    }

    /// hidden (B·S, D) ← hidden + Attention(LN(hidden)); hidden ← hidden + MLP(LN(hidden))
    func forward(
        _ hidden: UnsafeMutablePointer<Float>, batch: Int, sequence: Int,
        headMask: [Float]?, attentions: UnsafeMutablePointer<Float>?, workspace w: EncoderWorkspace
    ) {
        let tokens = batch * sequence
        let parallelism = w.parallelism
        layernormBefore.forward(hidden, rows: tokens, into: w.normed.pointer, parallelism: parallelism)
        attention.attention.forward(batch: batch, sequence: sequence, headMask: headMask, attentions: attentions, workspace: w)
        attention.output.dense.forward(w.context.pointer, rows: tokens, into: hidden, accumulate: true, parallelism: parallelism)
        layernormAfter.forward(hidden, rows: tokens, into: w.normed.pointer, parallelism: parallelism)
        intermediate.forward(w.normed.pointer, rows: tokens, into: w.intermediate.pointer, parallelism: parallelism)
        output.dense.forward(w.intermediate.pointer, rows: tokens, into: hidden, accumulate: true, parallelism: parallelism)
    }
    /// Training forward: the computation of `forward`, keeping what the backward needs and, with `dropout`,
    /// dropping where Transformers does: attention probabilities, and each branch's output before its
    /// residual add.
    func forwardTraining(
        _ hidden: UnsafeMutablePointer<Float>, batch: Int, sequence: Int, dropout: inout Dropout?, workspace w: EncoderWorkspace
    ) -> BlockActivations {
        let tokens = batch * sequence
        let parallelism = w.parallelism
        let selfAttention = attention.attention
        let a = BlockActivations(input: Buffer(copying: hidden, count: w.normed.count), batch: batch, sequence: sequence, heads: selfAttention.heads, intermediateSize: intermediate.dense.outFeatures)
        layernormBefore.forward(hidden, rows: tokens, into: a.normedBefore.pointer, parallelism: parallelism)
        selfAttention.query.forward(a.normedBefore.pointer, rows: tokens, into: a.query.pointer, parallelism: parallelism)
        selfAttention.key.forward(a.normedBefore.pointer, rows: tokens, into: a.key.pointer, parallelism: parallelism)
        selfAttention.value.forward(a.normedBefore.pointer, rows: tokens, into: a.value.pointer, parallelism: parallelism)
        multiHeadAttention(
            query: a.query.pointer, key: a.key.pointer, value: a.value.pointer, context: a.context.pointer,
            batch: batch, sequence: sequence, heads: selfAttention.heads, headDim: selfAttention.headDim,
            scale: 1 / Float(selfAttention.headDim).squareRoot(), headMask: nil,
            probabilities: a.probabilities.pointer, scratch: w.scores.pointer, parallelism: parallelism)
        if let probability = dropout?.attentionProbability, probability > 0 {
            let dropped = Buffer(copying: a.probabilities.pointer, count: a.probabilities.count)
            a.attentionDrop = dropout!.apply(dropped.pointer, count: dropped.count, probability: probability)
            a.droppedProbabilities = dropped
            attentionContext(
                probabilities: dropped.pointer, value: a.value.pointer, context: a.context.pointer, batch: batch,
                sequence: sequence, heads: selfAttention.heads, headDim: selfAttention.headDim, parallelism: parallelism)
        }
        a.attentionOutputDrop = addBranch(attention.output.dense, input: a.context.pointer, to: hidden, rows: tokens, dropout: &dropout, workspace: w)
        a.middle.pointer.update(from: hidden, count: a.middle.count)
        layernormAfter.forward(hidden, rows: tokens, into: a.normedAfter.pointer, parallelism: parallelism)
        intermediate.dense.forward(a.normedAfter.pointer, rows: tokens, into: a.preActivation.pointer, parallelism: parallelism)
        a.activated.pointer.update(from: a.preActivation.pointer, count: a.activated.count)
        parallelism.forEachChunk(of: tokens) { rows in
            let width = a.activated.count / tokens
            intermediate.activation.apply(a.activated.pointer + rows.lowerBound * width, count: rows.count * width)
        }
        a.outputDrop = addBranch(output.dense, input: a.activated.pointer, to: hidden, rows: tokens, dropout: &dropout, workspace: w)
        return a
    }

    /// hidden += dropout(dense(input)); returns the dropout multipliers, if any were drawn.
    private func addBranch(
        _ dense: Linear, input: UnsafePointer<Float>, to hidden: UnsafeMutablePointer<Float>, rows: Int,
        dropout: inout Dropout?, workspace w: EncoderWorkspace
    ) -> Buffer? {
        guard let probability = dropout?.hiddenProbability, probability > 0 else {
            dense.forward(input, rows: rows, into: hidden, accumulate: true, parallelism: w.parallelism)
            return nil
        }
        dense.forward(input, rows: rows, into: w.branch.pointer, parallelism: w.parallelism)
        let multipliers = dropout!.apply(w.branch.pointer, count: w.branch.count, probability: probability)
        addInPlace(hidden, w.branch.pointer, count: w.branch.count)
        return multipliers
    }

    /// The backward of `forwardTraining`: `gradient` (B·S, D) holds the gradient of the block's output and
    /// receives that of its input. Parameter gradients accumulate.
    func backward(_ gradient: UnsafeMutablePointer<Float>, activations a: BlockActivations, workspace w: EncoderWorkspace) {
        let tokens = a.batch * a.sequence
        let parallelism = w.parallelism
        let selfAttention = attention.attention
        // MLP branch: out = middle + drop(output.dense(act(intermediate.dense(layernorm_after(middle)))))
        output.dense.backward(
            input: a.activated.pointer, outputGradient: branchGradient(gradient, a.outputDrop, w), rows: tokens,
            inputGradient: w.intermediate.pointer, parallelism: parallelism)
        parallelism.forEachChunk(of: tokens) { rows in
            let width = a.preActivation.count / tokens
            let offset = rows.lowerBound * width
            intermediate.activation.backward(input: a.preActivation.pointer + offset, gradient: w.intermediate.pointer + offset, count: rows.count * width)
        }
        intermediate.dense.backward(
            input: a.normedAfter.pointer, outputGradient: w.intermediate.pointer, rows: tokens, inputGradient: w.normed.pointer, parallelism: parallelism)
        layernormAfter.backward(
            input: a.middle.pointer, outputGradient: w.normed.pointer, rows: tokens, inputGradient: gradient, accumulate: true, parallelism: parallelism)
        // Attention branch: middle = input + drop(attention.output.dense(attention(layernorm_before(input))))
        attention.output.dense.backward(
            input: a.context.pointer, outputGradient: branchGradient(gradient, a.attentionOutputDrop, w), rows: tokens,
            inputGradient: w.context.pointer, parallelism: parallelism)
        multiHeadAttentionBackward(
            query: a.query.pointer, key: a.key.pointer, value: a.value.pointer, probabilities: a.probabilities.pointer,
            dropped: a.droppedProbabilities?.pointer, dropMultipliers: a.attentionDrop?.pointer, contextGradient: w.context.pointer,
            queryGradient: w.query.pointer, keyGradient: w.key.pointer, valueGradient: w.value.pointer,
            batch: a.batch, sequence: a.sequence, heads: selfAttention.heads, headDim: selfAttention.headDim,
            scale: 1 / Float(selfAttention.headDim).squareRoot(), scratch: w.scores.pointer, parallelism: parallelism)
        for (projection, projectionGradient, first) in [(selfAttention.query, w.query, true), (selfAttention.key, w.key, false), (selfAttention.value, w.value, false)] {
            projection.backward(
                input: a.normedBefore.pointer, outputGradient: projectionGradient.pointer, rows: tokens,
                inputGradient: w.normed.pointer, accumulateInput: !first, parallelism: parallelism)
        }
        layernormBefore.backward(
            input: a.input.pointer, outputGradient: w.normed.pointer, rows: tokens, inputGradient: gradient, accumulate: true, parallelism: parallelism)
    }

    /// A branch's output gradient: the residual stream's, through the branch's dropout multipliers if any.
    private func branchGradient(_ gradient: UnsafeMutablePointer<Float>, _ multipliers: Buffer?, _ w: EncoderWorkspace) -> UnsafePointer<Float> {
        guard let multipliers else { return UnsafePointer(gradient) }
        for i in 0..<multipliers.count { w.branch.pointer[i] = gradient[i] * multipliers.pointer[i] }
        return UnsafePointer(w.branch.pointer)
    }
}

/// What one block's training forward keeps for its backward (T = B·S tokens).
final class BlockActivations {
    let batch, sequence: Int
    let input: Buffer                        // (T, D) the residual stream entering the block: layernorm_before's input
    let normedBefore: Buffer                 // (T, D) layernorm_before's output: the query/key/value input
    let query, key, value: Buffer            // (T, D)
    let probabilities: Buffer                // (B, heads, S, S) softmax output
    var droppedProbabilities: Buffer?        // the same after attention dropout
    var attentionDrop: Buffer?               // its multipliers
    let context: Buffer                      // (T, D) attention.output.dense's input
    var attentionOutputDrop: Buffer?         // hidden dropout multipliers on the attention branch
    let middle: Buffer                       // (T, D) the residual stream after attention: layernorm_after's input
    let normedAfter: Buffer                  // (T, D) intermediate.dense's input
    let preActivation: Buffer                // (T, I) before the activation
    let activated: Buffer                    // (T, I) output.dense's input
    var outputDrop: Buffer?                  // hidden dropout multipliers on the MLP branch

    init(input: Buffer, batch: Int, sequence: Int, heads: Int, intermediateSize: Int) {
        let tokens = batch * sequence
        (self.input, self.batch, self.sequence) = (input, batch, sequence)
        (normedBefore, query, key, value, context, middle, normedAfter) = (
            Buffer(input.count), Buffer(input.count), Buffer(input.count), Buffer(input.count), Buffer(input.count),
            Buffer(input.count), Buffer(input.count))
        probabilities = Buffer(batch * heads * sequence * sequence)
        preActivation = Buffer(tokens * intermediateSize)
        activated = Buffer(tokens * intermediateSize)
    }
}


public final class ViTMSNEncoder: Module {
    public let layer: [ViTMSNLayer]

    init(config: ViTMSNConfig) {
        layer = (0..<config.numHiddenLayers).map { _ in ViTMSNLayer(config: config) }
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        for (i, block) in layer.enumerated() { try self.visit("layer.\(i)", block, visit) }
    }
}

// MARK: - Models

/// The ViT-MSN backbone: embeddings, L pre-LN blocks, final LayerNorm. No pooler.
public final class ViTMSNModel: Module {
    public let config: ViTMSNConfig
    /// How the forward pass splits its work across cores (all of them by default).
    public var parallelism = Parallelism()
    public let embeddings: ViTMSNEmbeddings
    public let encoder: ViTMSNEncoder
    public let layernorm: LayerNorm

    /// `useMaskToken` adds `embeddings.mask_token`, needed for `boolMaskedPos` (Transformers' `use_mask_token`).
    public init(config: ViTMSNConfig, useMaskToken: Bool = false) throws {
        try config.validate()
        self.config = config
        embeddings = ViTMSNEmbeddings(config: config, useMaskToken: useMaskToken)
        encoder = ViTMSNEncoder(config: config)
        layernorm = LayerNorm(config.hiddenSize, eps: Float(config.layerNormEps))
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("embeddings", embeddings, visit)
        try self.visit("encoder", encoder, visit)
        try self.visit("layernorm", layernorm, visit)
    }

    /// - Parameters:
    ///   - pixelValues: (B, C, H, W), normalised as the image processor does.
    ///   - boolMaskedPos: (B, N), nonzero where a patch is replaced by the mask token.
    ///   - headMask: (heads) or (L, heads); 1 keeps a head, 0 silences it.
    public func forward(
        pixelValues: Tensor, boolMaskedPos: Tensor? = nil, headMask: Tensor? = nil,
        outputAttentions: Bool = false, outputHiddenStates: Bool = false, interpolatePosEncoding: Bool = false
    ) throws -> ViTMSNModelOutput {
        let layerHeadMasks = try expandHeadMask(headMask)
        let (hidden, sequence, _, _, _) = try embeddings.forward(
            pixelValues, boolMaskedPos: boolMaskedPos, interpolatePosEncoding: interpolatePosEncoding, parallelism: parallelism)
        let batch = pixelValues.shape[0]
        let dim = config.hiddenSize
        let tokens = batch * sequence
        let workspace = EncoderWorkspace(tokens: tokens, sequence: sequence, config: config, parallelism: parallelism)

        func snapshot() -> Tensor {
            var state = Tensor(zeros: [batch, sequence, dim])
            state.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: hidden.pointer, count: tokens * dim) }
            return state
        }
        var hiddenStates: [Tensor]? = outputHiddenStates ? [snapshot()] : nil
        var attentions: [Tensor]? = outputAttentions ? [] : nil
        for (i, block) in encoder.layer.enumerated() {
            if outputAttentions {
                var probabilities = Tensor(zeros: [batch, config.numAttentionHeads, sequence, sequence])
                probabilities.withUnsafeMutableBufferPointer { p in
                    block.forward(hidden.pointer, batch: batch, sequence: sequence, headMask: layerHeadMasks?[i], attentions: p.baseAddress!, workspace: workspace)
                }
                attentions!.append(probabilities)
            } else {
                block.forward(hidden.pointer, batch: batch, sequence: sequence, headMask: layerHeadMasks?[i], attentions: nil, workspace: workspace)
            }
            hiddenStates?.append(snapshot())
        }
        var last = Tensor(zeros: [batch, sequence, dim])
        last.withUnsafeMutableBufferPointer { layernorm.forward(hidden.pointer, rows: tokens, into: $0.baseAddress!, parallelism: parallelism) }
        return ViTMSNModelOutput(lastHiddenState: last, hiddenStates: hiddenStates, attentions: attentions)
    }

    /// The last layer's attention from the CLS token to every patch (B, heads, S − 1): the maps the DINO and
    /// MSN papers show.
    public func clsAttention(pixelValues: Tensor, interpolatePosEncoding: Bool = false) throws -> Tensor {
        let probabilities = try forward(pixelValues: pixelValues, outputAttentions: true, interpolatePosEncoding: interpolatePosEncoding).attentions!.last!
        let (batch, heads, sequence) = (probabilities.shape[0], probabilities.shape[1], probabilities.shape[2])
        let values = probabilities.scalars
        var maps: [Float] = []
        for row in 0..<(batch * heads) {
            let query0 = row * sequence * sequence // the CLS token's row; keys 1... are the patches
            maps += values[(query0 + 1)..<(query0 + sequence)]
        }
        return Tensor(shape: [batch, heads, sequence - 1], scalars: maps)
    }

    /// Training forward (Transformers' `model.train()`): returns `last_hidden_state` (B, S, D) and the
    /// activations `backward` needs. `keep` drops patches as MSN's anchor views do (see
    /// `ViTMSNEmbeddings.forwardTraining`); `dropout` nil means eval-mode behaviour.
    public func forwardTraining(
        pixelValues: Tensor, keep: [[Int]]? = nil, interpolatePosEncoding: Bool = false, dropout: inout Dropout?
    ) throws -> (lastHiddenState: Tensor, activations: ViTMSNActivations) {
        let (hidden, sequence, embeddingActivations) = try embeddings.forwardTraining(
            pixelValues, keep: keep, interpolatePosEncoding: interpolatePosEncoding, dropout: &dropout, parallelism: parallelism)
        let batch = pixelValues.shape[0]
        let tokens = batch * sequence
        let workspace = EncoderWorkspace(tokens: tokens, sequence: sequence, config: config, parallelism: parallelism)
        let blocks = encoder.layer.map { $0.forwardTraining(hidden.pointer, batch: batch, sequence: sequence, dropout: &dropout, workspace: workspace) }
        let last = Buffer(hidden.count)
        layernorm.forward(hidden.pointer, rows: tokens, into: last.pointer, parallelism: parallelism)
        let activations = ViTMSNActivations(embeddings: embeddingActivations, blocks: blocks, encoderOutput: hidden, batch: batch, sequence: sequence)
        return (last.tensor([batch, sequence, config.hiddenSize]), activations)
    }

    /// The backward of `forwardTraining` from the gradient of `last_hidden_state` (B, S, D): accumulates every
    /// parameter's gradient (allocate them with `zeroGradients()` first) and returns the gradient of
    /// `pixel_values` when `inputGradient` is set.
    @discardableResult
    public func backward(_ activations: ViTMSNActivations, lastHiddenStateGradient: Tensor, inputGradient: Bool = false) -> Tensor? {
        let (batch, sequence) = (activations.batch, activations.sequence)
        let tokens = batch * sequence
        precondition(lastHiddenStateGradient.count == tokens * config.hiddenSize, "gradient of shape \(lastHiddenStateGradient.shape) for (\(batch), \(sequence), \(config.hiddenSize))")
        let workspace = EncoderWorkspace(
            tokens: tokens, sequence: sequence, config: config, parallelism: parallelism,
            scoreCount: parallelism.threads * sequence * sequence)
        let gradient = Buffer(tokens * config.hiddenSize)
        lastHiddenStateGradient.withUnsafeBufferPointer { dLast in
            layernorm.backward(
                input: activations.encoderOutput.pointer, outputGradient: dLast.baseAddress!, rows: tokens,
                inputGradient: gradient.pointer, accumulate: false, parallelism: parallelism)
        }
        for (block, blockActivations) in zip(encoder.layer, activations.blocks).reversed() {
            block.backward(gradient.pointer, activations: blockActivations, workspace: workspace)
        }
        var pixelGradient = inputGradient ? Tensor(zeros: activations.embeddings.pixelShape) : nil
        let pixelPointer = pixelGradient?.uniqueBaseAddress()
        embeddings.backward(gradient.pointer, sequence: sequence, activations: activations.embeddings, pixelGradient: pixelPointer, parallelism: parallelism)
        return pixelGradient
    }

    /// Transformers' `get_head_mask`: (heads) applies to every layer, (L, heads) per layer.
    func expandHeadMask(_ headMask: Tensor?) throws -> [[Float]]? {
        guard let headMask else { return nil }
        let (layers, heads) = (config.numHiddenLayers, config.numAttentionHeads)
        switch headMask.shape {
        case [heads]:
            return Array(repeating: headMask.scalars, count: layers)
        case [layers, heads]:
            let values = headMask.scalars
            return (0..<layers).map { Array(values[($0 * heads)..<(($0 + 1) * heads)]) }
        default:
            throw ViTMSNError("head_mask must have shape [\(heads)] or [\(layers), \(heads)] (num_hidden_layers, num_attention_heads), got \(headMask.shape)")
        }
    }
}

/// What `ViTMSNModel.forwardTraining` keeps for `backward`.
public final class ViTMSNActivations {
    let embeddings: EmbeddingActivations
    let blocks: [BlockActivations]
    let encoderOutput: Buffer // (B·S, D) the final layernorm's input
    let batch, sequence: Int

    init(embeddings: EmbeddingActivations, blocks: [BlockActivations], encoderOutput: Buffer, batch: Int, sequence: Int) {
        (self.embeddings, self.blocks, self.encoderOutput, self.batch, self.sequence) = (embeddings, blocks, encoderOutput, batch, sequence)
    }
}

public struct ImageClassifierOutput {
    public var loss: Float?
    /// (B, num_labels), or (B, D) CLS features when the model has no labels.
    public var logits: Tensor
    public var hiddenStates: [Tensor]?
    public var attentions: [Tensor]?
}

/// The CLS token (B, D) of each sequence of a hidden state (B, S, D): what the classifier, MSN's head and the
/// low-shot features take.
package func clsTokens(_ hiddenState: Tensor) -> Tensor {
    let (batch, sequence, dim) = (hiddenState.shape[0], hiddenState.shape[1], hiddenState.shape[2])
    var cls = Tensor(zeros: [batch, dim])
    cls.withUnsafeMutableBufferPointer { out in
        hiddenState.withUnsafeBufferPointer { states in
            for b in 0..<batch { (out.baseAddress! + b * dim).update(from: states.baseAddress! + b * sequence * dim, count: dim) }
        }
    }
    return cls
}

/// The backward of `clsTokens`: the gradient (B, S, D) of the hidden state, `clsGradient` (B, D) at token 0
/// and zero elsewhere.
package func clsTokensBackward(_ clsGradient: UnsafePointer<Float>, batch: Int, sequence: Int, dim: Int) -> Tensor {
    var gradient = Tensor(zeros: [batch, sequence, dim])
    gradient.withUnsafeMutableBufferPointer { d in
        for b in 0..<batch { (d.baseAddress! + b * sequence * dim).update(from: clsGradient + b * dim, count: dim) }
    }
    return gradient
}

/// The backbone with a linear classifier on the CLS token after the final LayerNorm.
public final class ViTMSNForImageClassification: Module {
    public let vit: ViTMSNModel
    /// `nil` stands for `nn.Identity` when `num_labels == 0`.
    public let classifier: Linear?
    public var config: ViTMSNConfig

    public init(config: ViTMSNConfig) throws {
        vit = try ViTMSNModel(config: config)
        self.config = config
        classifier = config.numLabels > 0 ? Linear(config.hiddenSize, config.numLabels) : nil
    }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("vit", vit, visit)
        if let classifier { try self.visit("classifier", classifier, visit) }
    }

    /// Same inputs as `ViTMSNModel.forward`, plus `labels` for the loss (see `ClassificationLabels`). The
    /// model is left as it was (a problem type inferred from the labels is used, not stored), so one model
    /// serves several threads at once; training (`forwardTraining`) stores it, as Transformers does.
    public func forward(
        pixelValues: Tensor, labels: ClassificationLabels? = nil, headMask: Tensor? = nil,
        outputAttentions: Bool = false, outputHiddenStates: Bool = false, interpolatePosEncoding: Bool = false
    ) throws -> ImageClassifierOutput {
        let outputs = try vit.forward(
            pixelValues: pixelValues, headMask: headMask, outputAttentions: outputAttentions,
            outputHiddenStates: outputHiddenStates, interpolatePosEncoding: interpolatePosEncoding)
        let (_, logits) = classify(outputs.lastHiddenState)
        var inferred = config
        let loss = try labels.map { try classificationLoss(logits: logits, labels: $0, config: &inferred).loss }
        return ImageClassifierOutput(loss: loss, logits: logits, hiddenStates: outputs.hiddenStates, attentions: outputs.attentions)
    }

    /// CLS features (B, D) of `last_hidden_state` (B, S, D) and the logits on them (the features themselves
    /// without a classifier).
    private func classify(_ lastHiddenState: Tensor) -> (cls: Tensor, logits: Tensor) {
        let batch = lastHiddenState.shape[0]
        let cls = clsTokens(lastHiddenState)
        guard let classifier else { return (cls, cls) }
        var logits = Tensor(zeros: [batch, classifier.outFeatures])
        logits.withUnsafeMutableBufferPointer { out in
            cls.withUnsafeBufferPointer { classifier.forward($0.baseAddress!, rows: batch, into: out.baseAddress!) }
        }
        return (cls, logits)
    }

    /// Training forward with a loss. With `trainBackbone` false (linear probing) the backbone runs its
    /// inference forward and only the classifier gets gradients.
    public func forwardTraining(
        pixelValues: Tensor, labels: ClassificationLabels, interpolatePosEncoding: Bool = false,
        trainBackbone: Bool = true, dropout: inout Dropout?
    ) throws -> (loss: Float, logits: Tensor, activations: ClassifierActivations) {
        guard classifier != nil else { throw ViTMSNError("training a classifier needs num_labels > 0") }
        let lastHiddenState: Tensor
        var backbone: ViTMSNActivations?
        if trainBackbone {
            (lastHiddenState, backbone) = try vit.forwardTraining(pixelValues: pixelValues, interpolatePosEncoding: interpolatePosEncoding, dropout: &dropout)
        } else {
            lastHiddenState = try vit.forward(pixelValues: pixelValues, interpolatePosEncoding: interpolatePosEncoding).lastHiddenState
        }
        let (cls, logits) = classify(lastHiddenState)
        let (loss, logitsGradient) = try classificationLoss(logits: logits, labels: labels, config: &config)
        let activations = ClassifierActivations(backbone: backbone, cls: cls, logitsGradient: logitsGradient, sequence: lastHiddenState.shape[1])
        return (loss, logits, activations)
    }

    /// The backward of `forwardTraining` from its loss times `lossScale` (1/steps under gradient
    /// accumulation); returns the gradient of `pixel_values` when asked.
    @discardableResult
    public func backward(_ activations: ClassifierActivations, lossScale: Float = 1, inputGradient: Bool = false) -> Tensor? {
        let batch = activations.cls.shape[0]
        let dim = config.hiddenSize
        let clsGradient = activations.backbone == nil ? nil : Buffer(batch * dim)
        var logitsGradient = activations.logitsGradient
        if lossScale != 1 { logitsGradient.withUnsafeMutableBufferPointer { for i in $0.indices { $0[i] *= lossScale } } }
        activations.cls.withUnsafeBufferPointer { cls in
            logitsGradient.withUnsafeBufferPointer { dLogits in
                classifier!.backward(
                    input: cls.baseAddress!, outputGradient: dLogits.baseAddress!, rows: batch,
                    inputGradient: clsGradient?.pointer, parallelism: vit.parallelism)
            }
        }
        guard let backbone = activations.backbone, let clsGradient else { return nil }
        let lastGradient = clsTokensBackward(clsGradient.pointer, batch: batch, sequence: activations.sequence, dim: dim)
        return vit.backward(backbone, lastHiddenStateGradient: lastGradient, inputGradient: inputGradient)
    }
}

/// What `ViTMSNForImageClassification.forwardTraining` keeps for `backward`.
public final class ClassifierActivations {
    let backbone: ViTMSNActivations? // nil when the backbone is frozen
    let cls: Tensor                  // (B, D) the classifier's input
    let logitsGradient: Tensor       // (B, num_labels) d loss / d logits
    let sequence: Int

    init(backbone: ViTMSNActivations?, cls: Tensor, logitsGradient: Tensor, sequence: Int) {
        (self.backbone, self.cls, self.logitsGradient, self.sequence) = (backbone, cls, logitsGradient, sequence)
    }
}
