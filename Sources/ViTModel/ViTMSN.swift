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
public final class ViTMSNPatchEmbeddings: NN.Module {
    public let projection: NN.Linear // weight (D, C, P, P), bias (D)
    let config: ViTMSNConfig

    init(config: ViTMSNConfig) {
        self.config = config
        let p = config.patchSize
        projection = NN.Linear(
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

    /// Calls `body(pixelOffset, patchOffset)` for every P-pixel row of every patch: the row starting at
    /// `pixelOffset` in (B, C, H, W) is at `patchOffset` in (B·N, C·P·P), each patch flattened (c, ky, kx).
    func forEachPatchRow(pixelShape: [Int], _ body: (_ pixelOffset: Int, _ patchOffset: Int) -> Void) {
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
public final class ViTMSNEmbeddings: NN.Module {
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

}

// MARK: - Encoder

/// Scratch memory for one forward pass through the encoder, reused by every layer.
final class EncoderWorkspace {
    let normed, query, key, value, context: Buffer // (B·S, D) each
    let intermediate: Buffer                        // (B·S, I)
    let scores: Buffer                              // attentionScratchCount floats, or unused when attentions are returned
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
        scores = Buffer(scoreCount ?? attentionScratchCount(sequence: sequence, headDim: config.headDim, threads: parallelism.threads))
    }
}

/// `attention.attention`: query, key and value projections and the scaled-dot-product core.
public final class ViTMSNSelfAttention: NN.Module {
    public let query, key, value: NN.Linear // (D, D) each
    let heads: Int
    let headDim: Int

    init(config: ViTMSNConfig) {
        query = NN.Linear(config.hiddenSize, config.hiddenSize, bias: config.qkvBias)
        key = NN.Linear(config.hiddenSize, config.hiddenSize, bias: config.qkvBias)
        value = NN.Linear(config.hiddenSize, config.hiddenSize, bias: config.qkvBias)
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
        let int8 = query.quantizedWeight != nil && key.quantizedWeight != nil && value.quantizedWeight != nil
        if int8 {  // quantise once
            let normed = QuantizedRows(w.normed.pointer, rows: tokens, columns: query.inFeatures,
                                       for: [query, key, value].map { $0.quantizedWeight! }, parallelism: w.parallelism)
            let products = [query.product(into: w.query.pointer), key.product(into: w.key.pointer), value.product(into: w.value.pointer)]
            quantizedLinearForward(x: normed, products: products, parallelism: w.parallelism)
        } else {
            query.forward(w.normed.pointer, rows: tokens, into: w.query.pointer, parallelism: w.parallelism)
            key.forward(w.normed.pointer, rows: tokens, into: w.key.pointer, parallelism: w.parallelism)
            value.forward(w.normed.pointer, rows: tokens, into: w.value.pointer, parallelism: w.parallelism)
        }
        multiHeadAttention(
            query: w.query.pointer, key: w.key.pointer, value: w.value.pointer, context: w.context.pointer,
            batch: batch, sequence: sequence, heads: heads, headDim: headDim,
            scale: 1 / Float(headDim).squareRoot(), headMask: headMask,
            probabilities: attentions, scratch: w.scores.pointer, int8: int8 && QuantizedMatrix.quantizesAttention, parallelism: w.parallelism
        )
    }
}

/// `attention.output`: the output projection. Transformers adds the residual in `ViTMSNLayer`; here the
/// projection accumulates straight into the residual stream.
public final class ViTMSNSelfOutput: NN.Module {
    public let dense: NN.Linear // (D, D)

    init(config: ViTMSNConfig) { dense = NN.Linear(config.hiddenSize, config.hiddenSize) }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("dense", dense, visit)
    }
}

public final class ViTMSNAttention: NN.Module {
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
public final class ViTMSNIntermediate: NN.Module {
    public let dense: NN.Linear // (I, D)
    let activation: Activation

    init(config: ViTMSNConfig) {
        dense = NN.Linear(config.hiddenSize, config.intermediateSize)
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
public final class ViTMSNOutput: NN.Module {
    public let dense: NN.Linear // (D, I)

    init(config: ViTMSNConfig) { dense = NN.Linear(config.intermediateSize, config.hiddenSize) }

    public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try self.visit("dense", dense, visit)
    }
}

/// One pre-LayerNorm transformer block.
public final class ViTMSNLayer: NN.Module {
    public let attention: ViTMSNAttention
    public let intermediate: ViTMSNIntermediate
    public let output: ViTMSNOutput
    public let layernormBefore: NN.LayerNorm
    public let layernormAfter: NN.LayerNorm

    init(config: ViTMSNConfig) {
        attention = ViTMSNAttention(config: config)
        intermediate = ViTMSNIntermediate(config: config)
        output = ViTMSNOutput(config: config)
        layernormBefore = NN.LayerNorm(config.hiddenSize, eps: Float(config.layerNormEps))
        layernormAfter = NN.LayerNorm(config.hiddenSize, eps: Float(config.layerNormEps))
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

}

public final class ViTMSNEncoder: NN.Module {
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
public final class ViTMSNModel: NN.Module {
    public let config: ViTMSNConfig
    /// How the forward pass splits its work across cores (all of them by default).
    public var parallelism = Parallelism()
    public let embeddings: ViTMSNEmbeddings
    public let encoder: ViTMSNEncoder
    public let layernorm: NN.LayerNorm

    /// `useMaskToken` adds `embeddings.mask_token`, needed for `boolMaskedPos` (Transformers' `use_mask_token`).
    public init(config: ViTMSNConfig, useMaskToken: Bool = false) throws {
        try config.validate()
        self.config = config
        embeddings = ViTMSNEmbeddings(config: config, useMaskToken: useMaskToken)
        encoder = ViTMSNEncoder(config: config)
        layernorm = NN.LayerNorm(config.hiddenSize, eps: Float(config.layerNormEps))
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
        try checkMemory(pixelValues, outputAttentions: outputAttentions, outputHiddenStates: outputHiddenStates)
        let (hidden, sequence, _, _, _) = try embeddings.forward(
            pixelValues, boolMaskedPos: boolMaskedPos, interpolatePosEncoding: interpolatePosEncoding, parallelism: parallelism)
        let batch = pixelValues.shape[0]
        let (dim, heads, layers) = (config.hiddenSize, config.numAttentionHeads, config.numHiddenLayers)
        let tokens = batch * sequence
        // Requested outputs are allocated whole, and each image's slices written where its layers run.
        var attentions: [Tensor]? = outputAttentions ? (0..<layers).map { _ in Tensor(zeros: [batch, heads, sequence, sequence]) } : nil
        var hiddenStates: [Tensor]? = outputHiddenStates ? (0...layers).map { _ in Tensor(zeros: [batch, sequence, dim]) } : nil
        let attentionBases = outputAttentions ? (0..<layers).map { attentions![$0].uniqueBaseAddress() } : nil
        let stateBases = outputHiddenStates ? (0...layers).map { hiddenStates![$0].uniqueBaseAddress() } : nil
        stateBases?[0].update(from: hidden.pointer, count: tokens * dim)

        /// The encoder's layers over images `images`, in `workspace`.
        func encode(_ images: Range<Int>, workspace: EncoderWorkspace) {
            let rows = images.lowerBound * sequence
            for (i, block) in encoder.layer.enumerated() {
                block.forward(hidden.pointer + rows * dim, batch: images.count, sequence: sequence, headMask: layerHeadMasks?[i],
                              attentions: attentionBases.map { $0[i] + images.lowerBound * heads * sequence * sequence }, workspace: workspace)
                stateBases?[i + 1].advanced(by: rows * dim).update(from: hidden.pointer + rows * dim, count: images.count * sequence * dim)
            }
        }
        // Whole images per thread while each thread has one: each runs its images alone, one at a time, so
        // its activations stay in its core's cache and no product waits for the other cores (int8 ViT-S at
        // batch 8: 1.12× the images/s of splitting every product, on a 2-core Xeon). The remainder splits
        // every product instead.
        let alone = batch / parallelism.threads * parallelism.threads
        parallelism.forEachChunk(of: alone) { images in
            let workspace = EncoderWorkspace(tokens: sequence, sequence: sequence, config: config, parallelism: .serial)
            for image in images { encode(image..<(image + 1), workspace: workspace) }
        }
        if alone < batch {
            let rest = batch - alone
            encode(alone..<batch, workspace: EncoderWorkspace(tokens: rest * sequence, sequence: sequence, config: config, parallelism: parallelism))
        }
        var last = Tensor(zeros: [batch, sequence, dim])
        last.withUnsafeMutableBufferPointer { layernorm.forward(hidden.pointer, rows: tokens, into: $0.baseAddress!, parallelism: parallelism) }
        return ViTMSNModelOutput(lastHiddenState: last, hiddenStates: hiddenStates, attentions: attentions)
    }

    /// Refuses an input whose activations and requested outputs would not fit `ViTMSNConfig.memoryLimit`,
    /// before anything is allocated (an interpolated 2048² input with attentions needs hundreds of GB).
    func checkMemory(_ pixels: Tensor, outputAttentions: Bool, outputHiddenStates: Bool) throws {
        guard pixels.shape.count == 4 else { return }  // the embeddings name the wrong rank
        let (d, layers, heads) = (config.hiddenSize, config.numHiddenLayers, config.numAttentionHeads)
        let grid = Checked.product(pixels.shape[2] / config.patchSize.height, pixels.shape[3] / config.patchSize.width)
        let sequence = Checked.sum(grid, 1)
        let perImage = sequence.flatMap { s in
            Checked.sum(Checked.product(s, 6 * d + config.intermediateSize),  // hidden, normed, q, k, v, context, MLP
                        outputAttentions ? Checked.product(layers, heads, s, s) : 0,
                        outputHiddenStates ? Checked.product(layers + 1, s, d) : 0)
        }
        let bytes = perImage.flatMap { Checked.product($0, pixels.shape[0], 4) }
        let limit = ViTMSNConfig.memoryLimit
        guard let bytes, bytes <= limit else {
            let need = bytes.map { String(format: "%.3g GB", Double($0) / 1e9) } ?? "more memory than can be counted"
            throw ViTMSNError("an input of \(pixels.shape) (\(sequence.map(String.init) ?? "too many") tokens)\(outputAttentions ? " with output_attentions" : "") needs \(need), above the limit of \(String(format: "%.3g", Double(limit) / 1e9)) GB (the machine's memory, or VITMSN_MEMORY_LIMIT_GB)")
        }
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

/// The backbone with a linear classifier on the CLS token after the final LayerNorm.
public final class ViTMSNForImageClassification: NN.Module {
    public let vit: ViTMSNModel
    /// `nil` stands for `nn.Identity` when `num_labels == 0`.
    public let classifier: NN.Linear?
    public var config: ViTMSNConfig

    public init(config: ViTMSNConfig) throws {
        vit = try ViTMSNModel(config: config)
        self.config = config
        classifier = config.numLabels > 0 ? NN.Linear(config.hiddenSize, config.numLabels) : nil
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
    package func classify(_ lastHiddenState: Tensor) -> (cls: Tensor, logits: Tensor) {
        let batch = lastHiddenState.shape[0]
        let cls = clsTokens(lastHiddenState)
        guard let classifier else { return (cls, cls) }
        var logits = Tensor(zeros: [batch, classifier.outFeatures])
        logits.withUnsafeMutableBufferPointer { out in
            cls.withUnsafeBufferPointer { classifier.forward($0.baseAddress!, rows: batch, into: out.baseAddress!) }
        }
        return (cls, logits)
    }

}

