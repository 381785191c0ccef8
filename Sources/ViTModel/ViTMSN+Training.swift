// The training half of the model: the training forward passes (dropout, patch dropping, what each block keeps)
// and their backward passes, next to one another, beside the inference half in ViTMSN.swift.
import ViTCore

extension ViTMSNPatchEmbeddings {
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
}

extension ViTMSNEmbeddings {
    /// Training forward: `forward`, then only the CLS token and the patches listed in `keep` (MSN's patch
    /// dropping: per image, K indices into the N patches), then hidden dropout. Returns (B, 1 + K, D), or
    /// (B, S, D) without `keep`.
    func forwardTraining(
        _ pixels: Tensor, keep: [[Int]]?, interpolatePosEncoding: Bool, dropout: inout NN.Dropout?, parallelism: Parallelism
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

extension ViTMSNLayer {
    /// Training forward: the computation of `forward`, keeping what the backward needs and, with `dropout`,
    /// dropping where Transformers does: attention probabilities, and each branch's output before its
    /// residual add.
    func forwardTraining(
        _ hidden: UnsafeMutablePointer<Float>, batch: Int, sequence: Int, dropout: inout NN.Dropout?, workspace w: EncoderWorkspace
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
        _ dense: NN.Linear, input: UnsafePointer<Float>, to hidden: UnsafeMutablePointer<Float>, rows: Int,
        dropout: inout NN.Dropout?, workspace w: EncoderWorkspace
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

extension ViTMSNModel {
    /// Training forward (Transformers' `model.train()`): returns `last_hidden_state` (B, S, D) and the
    /// activations `backward` needs. `keep` drops patches as MSN's anchor views do (see
    /// `ViTMSNEmbeddings.forwardTraining`); `dropout` nil means eval-mode behaviour.
    public func forwardTraining(
        pixelValues: Tensor, keep: [[Int]]? = nil, interpolatePosEncoding: Bool = false, dropout: inout NN.Dropout?
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
    /// `pixel_values` when `inputGradient` is set. `gradientsReady` hears each module's name prefix
    /// (`layernorm.`, `encoder.layer.11.` … `embeddings.`) as soon as its gradients are complete, so a
    /// data-parallel job can start reducing them while the rest of the backward runs.
    @discardableResult
    public func backward(_ activations: ViTMSNActivations, lastHiddenStateGradient: Tensor, inputGradient: Bool = false, gradientsReady: ((String) -> Void)? = nil) -> Tensor? {
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
        gradientsReady?("layernorm.")
        for (index, (block, blockActivations)) in zip(encoder.layer, activations.blocks).enumerated().reversed() {
            block.backward(gradient.pointer, activations: blockActivations, workspace: workspace)
            gradientsReady?("encoder.layer.\(index).")
        }
        var pixelGradient = inputGradient ? Tensor(zeros: activations.embeddings.pixelShape) : nil
        let pixelPointer = pixelGradient?.uniqueBaseAddress()
        embeddings.backward(gradient.pointer, sequence: sequence, activations: activations.embeddings, pixelGradient: pixelPointer, parallelism: parallelism)
        gradientsReady?("embeddings.")
        return pixelGradient
    }
}

extension ViTMSNForImageClassification {
    /// Training forward with a loss. With `trainBackbone` false (linear probing) the backbone runs its
    /// inference forward and only the classifier gets gradients.
    public func forwardTraining(
        pixelValues: Tensor, labels: ClassificationLabels, interpolatePosEncoding: Bool = false,
        trainBackbone: Bool = true, dropout: inout NN.Dropout?
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
    /// accumulation); returns the gradient of `pixel_values` when asked. `gradientsReady` hears module name
    /// prefixes as their gradients complete (`classifier.`, then the backbone's under `vit.`).
    @discardableResult
    public func backward(_ activations: ClassifierActivations, lossScale: Float = 1, inputGradient: Bool = false, gradientsReady: ((String) -> Void)? = nil) -> Tensor? {
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
        gradientsReady?("classifier.")
        guard let backbone = activations.backbone, let clsGradient else { return nil }
        let lastGradient = clsTokensBackward(clsGradient.pointer, batch: batch, sequence: activations.sequence, dim: dim)
        return vit.backward(backbone, lastHiddenStateGradient: lastGradient, inputGradient: inputGradient, gradientsReady: gradientsReady.map { ready in { ready("vit." + $0) } })
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

/// The backward of `clsTokens`: the gradient (B, S, D) of the hidden state, `clsGradient` (B, D) at token 0
/// and zero elsewhere.
package func clsTokensBackward(_ clsGradient: UnsafePointer<Float>, batch: Int, sequence: Int, dim: Int) -> Tensor {
    var gradient = Tensor(zeros: [batch, sequence, dim])
    gradient.withUnsafeMutableBufferPointer { d in
        for b in 0..<batch { (d.baseAddress! + b * sequence * dim).update(from: clsGradient + b * dim, count: dim) }
    }
    return gradient
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
