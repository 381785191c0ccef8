import Foundation
import ViTCore

/// The layers, in a namespace of their own as PyTorch keeps them in `torch.nn`, so that `Linear` or `Module`
/// never clash with a user's names.
public enum NN {
    /// A layer that owns parameters. `visitParameters` names each one as the checkpoint does, relative to the
    /// layer, together with its gradient slot (nil until training allocates it); composite layers prefix their
    /// children's names. Loading, saving and the optimisers all walk the model through this one function, so
    /// the name table lives in the layer types themselves.
    public protocol Module: AnyObject {
        func visitParameters(_ visit: (_ name: String, _ value: inout Tensor, _ gradient: inout Tensor?) throws -> Void) rethrows
    }
}

extension NN.Module {
    /// Visits `child`'s parameters under `prefix.`.
    @inline(__always)
    package func visit(_ prefix: String, _ child: NN.Module, _ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
        try child.visitParameters { name, tensor, gradient in try visit(prefix + "." + name, &tensor, &gradient) }
    }

    /// Parameters without their gradients (loading and saving).
    public func visitParameters(_ visit: (String, inout Tensor) throws -> Void) rethrows {
        try visitParameters { name, tensor, _ in try visit(name, &tensor) }
    }

    /// Sets every gradient to zero, allocating the ones not yet there unless `allocating` is false (then
    /// parameters without a gradient slot stay frozen).
    public func zeroGradients(allocating: Bool = true) {
        visitParameters { _, tensor, gradient in
            if gradient == nil && !allocating { return }
            if gradient == nil || gradient!.shape != tensor.shape {
                gradient = Tensor(zeros: tensor.shape)
            } else {
                gradient!.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
            }
        }
    }

    /// Every parameter with its full checkpoint name, in definition order.
    public var namedParameters: [(name: String, tensor: Tensor)] {
        var result: [(String, Tensor)] = []
        visitParameters { name, tensor in result.append((name, tensor)) }
        return result
    }

    public var parameterCount: Int { namedParameters.reduce(0) { $0 + $1.tensor.count } }
}

extension NN {
    /// `nn.Linear`: `y = x Wᵀ + b`, weight stored (out, in).
    /// A stride-equals-kernel `nn.Conv2d` is the same map on flattened patches; it keeps its (out, C, kh, kw)
    /// weight shape through `weightShape`, so checkpoints load without reshaping.
    public final class Linear: Module {
        public var weight: Tensor // (out, in)
        public var bias: Tensor?  // (out)
        public var weightGradient, biasGradient: Tensor?
        public let inFeatures: Int
        public let outFeatures: Int
        /// The weight's checkpoint shape: (out, in), or a convolution's (out, C, kh, kw).
        public let weightShape: [Int]

        public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, weightShape: [Int]? = nil) {
            self.inFeatures = inFeatures
            self.outFeatures = outFeatures
            let shape = weightShape ?? [outFeatures, inFeatures]
            precondition(Tensor.elementCount(shape) == inFeatures * outFeatures, "weight shape \(shape) for \(inFeatures) → \(outFeatures)")
            self.weightShape = shape
            weight = Tensor(zeros: shape)
            self.bias = bias ? Tensor(zeros: [outFeatures]) : nil
        }

        /// A quantised layer visits its bias only: its weight lives in `quantizedWeight`.
        public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
            if quantizedWeight == nil { try visit("weight", &weight, &weightGradient) }
            if bias != nil { try visit("bias", &bias!, &biasGradient) }
        }

        /// The int8 weight once `quantize()` or a quantised checkpoint has set it; the forward then runs the
        /// int8 GEMM (inference only).
        public private(set) var quantizedWeight: QuantizedMatrix?

        /// Quantises the weight to int8 (`bits` 8 or 7) per output channel and drops the float copy.
        public func quantize(bits: Int = QuantizedMatrix.preferredBits) {
            let matrix = weight.withUnsafeBufferPointer { QuantizedMatrix(quantizing: $0.baseAddress!, n: outFeatures, k: inFeatures, bits: bits) }
            setQuantizedWeight(matrix)
        }

        /// Takes an int8 weight (a quantised checkpoint's) in place of the float one.
        public func setQuantizedWeight(_ matrix: QuantizedMatrix) {
            precondition(matrix.n == outFeatures && matrix.k == inFeatures, "a \(matrix.n)×\(matrix.k) int8 weight for \(inFeatures) → \(outFeatures)")
            quantizedWeight = matrix
            weight.storage.releaseResidentPages()
            weight = Tensor(zeros: [0])
            (weightGradient, packed) = (nil, nil)
        }

        /// y (rows, out) = act(x (rows, in) · Wᵀ + b), or y += x · Wᵀ + b when `accumulate` (a residual add),
        /// fused into the GEMM's epilogue.
        public func forward(
            _ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>,
            accumulate: Bool = false, activation: Activation? = nil, parallelism: Parallelism = .serial
        ) {
            if quantizedWeight != nil {
                return forward(QuantizedRows(x, rows: rows, columns: inFeatures, for: [quantizedWeight!], parallelism: parallelism), into: y,
                               accumulate: accumulate, activation: activation, parallelism: parallelism)
            }
            let b = bias?.storage.base
            let packed = packedWeight(parallelism: parallelism)
            linearForward(
                x: x, weight: packed, bias: b.map { UnsafePointer($0) }, y: y, rows: rows,
                accumulate: accumulate, activation: activation, parallelism: parallelism)
        }

        /// The same for an int8 layer, on inputs already quantised (shared by several layers).
        package func forward(
            _ x: QuantizedRows, into y: UnsafeMutablePointer<Float>,
            accumulate: Bool = false, activation: Activation? = nil, parallelism: Parallelism = .serial
        ) {
            quantizedLinearForward(x: x, products: [product(into: y, accumulate: accumulate, activation: activation)], parallelism: parallelism)
        }

        /// This int8 layer's product into `y`, for `quantizedLinearForward`.
        package func product(into y: UnsafeMutablePointer<Float>, accumulate: Bool = false, activation: Activation? = nil) -> QuantizedProduct {
            QuantizedProduct(weight: quantizedWeight!, bias: bias.map { UnsafePointer($0.storage.base) }, y: y, accumulate: accumulate, activation: activation)
        }

        /// Wᵀ packed for the GEMM, packed again only after the weight has changed (a new tensor, or a write
        /// through it). A memory-mapped weight's pages are given back once packed, so the packed copy replaces
        /// them in resident memory instead of doubling it.
        public func packedWeight(parallelism: Parallelism = .serial) -> PackedMatrix {
            packLock.lock()
            defer { packLock.unlock() }
            if let copy = packed, copy.source === weight.storage, copy.version == weight.storage.version { return copy.matrix }
            let matrix = weight.withUnsafeBufferPointer { w in
                PackedMatrix(packing: w.baseAddress!, ldb: inFeatures, transposed: true, k: inFeatures, n: outFeatures, parallelism: parallelism)
            }
            weight.storage.releaseResidentPages()
            packed = PackedCopy(source: weight.storage, version: weight.storage.version, matrix: matrix)
            return matrix
        }

        private struct PackedCopy {
            weak var source: TensorStorage? // weak: the optimiser's in-place writes need the weight uniquely held
            let version: Int
            let matrix: PackedMatrix
        }
        private var packed: PackedCopy?
        private let packLock = NSLock()

        /// The backward of `forward`, given its input `x` (rows, in) and output gradient `dy` (rows, out):
        /// accumulates the weight and bias gradients and writes the input gradient into `dx` when given
        /// (adds to it with `accumulateInput`).
        public func backward(
            input x: UnsafePointer<Float>, outputGradient dy: UnsafePointer<Float>, rows: Int,
            inputGradient dx: UnsafeMutablePointer<Float>?, accumulateInput: Bool = false, parallelism: Parallelism = .serial
        ) {
            precondition(quantizedWeight == nil, "an int8 layer has no backward")
            precondition(weightGradient != nil, "zeroGradients() allocates the gradients before a backward pass")
            let dWeight = weightGradient!.uniqueBaseAddress()
            let dBias = bias == nil ? nil : biasGradient!.uniqueBaseAddress()
            weight.withUnsafeBufferPointer { w in
                linearBackward(
                    x: x, weight: w.baseAddress!, dy: dy, dx: dx, dWeight: dWeight, dBias: dBias, rows: rows,
                    inFeatures: inFeatures, outFeatures: outFeatures, accumulateInput: accumulateInput, parallelism: parallelism)
            }
        }

        /// N(0, std²) weights and zero bias, as Transformers' `_init_weights` does for `nn.Linear`.
        public func initialize(std: Float, using generator: inout SeededGenerator) {
            weight.withUnsafeMutableBufferPointer { w in
                for i in w.indices { w[i] = generator.normal(std: std) }
            }
            if bias != nil { bias = Tensor(zeros: [outFeatures]) }
        }
    }

    /// `nn.LayerNorm(dim, eps)` with affine weight and bias.
    public final class LayerNorm: Module {
        public var weight: Tensor // (dim)
        public var bias: Tensor   // (dim)
        public var weightGradient, biasGradient: Tensor?
        public let eps: Float

        public init(_ dim: Int, eps: Float) {
            weight = Tensor(shape: [dim], repeating: 1)
            bias = Tensor(zeros: [dim])
            self.eps = eps
        }

        public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
            try visit("weight", &weight, &weightGradient)
            try visit("bias", &bias, &biasGradient)
        }

        /// y (rows, dim) = LayerNorm(x (rows, dim)); `x` and `y` may alias.
        public func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, parallelism: Parallelism = .serial) {
            let dim = weight.count
            weight.withUnsafeBufferPointer { g in
                bias.withUnsafeBufferPointer { b in
                    parallelism.forEachChunk(of: rows, minimumChunk: 16) { chunk in
                        layerNorm(
                            x: x + chunk.lowerBound * dim, gamma: g.baseAddress!, beta: b.baseAddress!,
                            y: y + chunk.lowerBound * dim, rows: chunk.count, dim: dim, eps: eps)
                    }
                }
            }
        }

        /// The backward of `forward` from its input `x`: adds `dGamma`, `dBeta` to the gradients and writes
        /// (or, with `accumulate`, adds) the input gradient into `dx`. Rows go in blocks of 64, each summing its
        /// own parameter gradients, which are added up in block order: the same bits on any number of cores.
        public func backward(
            input x: UnsafePointer<Float>, outputGradient dy: UnsafePointer<Float>, rows: Int,
            inputGradient dx: UnsafeMutablePointer<Float>, accumulate: Bool, parallelism: Parallelism = .serial
        ) {
            precondition(weightGradient != nil, "zeroGradients() allocates the gradients before a backward pass")
            let dim = weight.count, blockRows = 64
            let blocks = (rows + blockRows - 1) / blockRows
            let partials = Buffer(zeros: blocks * 2 * dim) // per block: dGamma, dBeta
            weight.withUnsafeBufferPointer { g in
                parallelism.forEachChunk(of: blocks) { blockRange in
                    for block in blockRange {
                        let (first, count) = (block * blockRows, min(blockRows, rows - block * blockRows))
                        let partial = partials.pointer + block * 2 * dim
                        layerNormBackward(
                            x: x + first * dim, gamma: g.baseAddress!, dy: dy + first * dim,
                            dx: dx + first * dim, dGamma: partial, dBeta: partial + dim,
                            rows: count, dim: dim, eps: eps, accumulate: accumulate)
                    }
                }
            }
            let (dGamma, dBeta) = (weightGradient!.uniqueBaseAddress(), biasGradient!.uniqueBaseAddress())
            for block in 0..<blocks {
                addInPlace(dGamma, partials.pointer + block * 2 * dim, count: dim)
                addInPlace(dBeta, partials.pointer + block * 2 * dim + dim, count: dim)
            }
        }
    }

    /// `nn.BatchNorm1d(features)` on (rows, features). Training mode normalises with the batch's statistics
    /// (biased variance) and moves the running statistics (unbiased variance, momentum 0.1); eval mode uses the
    /// running statistics.
    public final class BatchNorm1d: Module {
        public var weight: Tensor // (features)
        public var bias: Tensor   // (features)
        public var weightGradient, biasGradient: Tensor?
        public var runningMean: Tensor // (features), buffers: saved, not trained
        public var runningVar: Tensor
        public var batchesTracked: Int64 = 0
        public let eps: Float
        public let momentum: Float

        public init(_ features: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
            weight = Tensor(shape: [features], repeating: 1)
            bias = Tensor(zeros: [features])
            runningMean = Tensor(zeros: [features])
            runningVar = Tensor(shape: [features], repeating: 1)
            (self.eps, self.momentum) = (eps, momentum)
        }

        public func visitParameters(_ visit: (String, inout Tensor, inout Tensor?) throws -> Void) rethrows {
            try visit("weight", &weight, &weightGradient)
            try visit("bias", &bias, &biasGradient)
        }

        /// y (rows, features) from x; in training mode also returns the per-feature 1/sqrt(var + eps) the
        /// backward needs (the batch mean is recomputed there from `x`).
        package func forward(_ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>, training: Bool) -> [Float] {
            let features = weight.count
            var mean = [Float](repeating: 0, count: features)
            var variance = [Float](repeating: 0, count: features)
            if training {
                for r in 0..<rows { for f in 0..<features { mean[f] += x[r * features + f] } }
                for f in 0..<features { mean[f] /= Float(rows) }
                for r in 0..<rows { for f in 0..<features { let d = x[r * features + f] - mean[f]; variance[f] += d * d } }
                let unbiased = runningVar.uniqueBaseAddress(), running = runningMean.uniqueBaseAddress()
                for f in 0..<features {
                    running[f] = (1 - momentum) * running[f] + momentum * mean[f]
                    unbiased[f] = (1 - momentum) * unbiased[f] + momentum * variance[f] / Float(max(rows - 1, 1))
                    variance[f] /= Float(rows)
                }
                batchesTracked += 1
            } else {
                (mean, variance) = (runningMean.scalars, runningVar.scalars)
            }
            let rstd = variance.map { 1 / ($0 + eps).squareRoot() }
            let (g, b) = (weight.scalars, bias.scalars)
            for r in 0..<rows {
                for f in 0..<features { y[r * features + f] = (x[r * features + f] - mean[f]) * rstd[f] * g[f] + b[f] }
            }
            return rstd
        }

        /// The training-mode backward: `dx = γ·rstd · (dy − mean(dy) − x̂ · mean(dy · x̂))` per feature over the
        /// rows; accumulates the weight and bias gradients.
        package func backward(input x: UnsafePointer<Float>, rstd: [Float], outputGradient dy: UnsafePointer<Float>, rows: Int, inputGradient dx: UnsafeMutablePointer<Float>) {
            let features = weight.count
            var mean = [Float](repeating: 0, count: features)
            for r in 0..<rows { for f in 0..<features { mean[f] += x[r * features + f] } }
            for f in 0..<features { mean[f] /= Float(rows) }
            var (dySum, dyNormedSum) = ([Float](repeating: 0, count: features), [Float](repeating: 0, count: features))
            for r in 0..<rows {
                for f in 0..<features {
                    let i = r * features + f
                    dySum[f] += dy[i]
                    dyNormedSum[f] += dy[i] * (x[i] - mean[f]) * rstd[f]
                }
            }
            let (dGamma, dBeta) = (weightGradient!.uniqueBaseAddress(), biasGradient!.uniqueBaseAddress())
            let g = weight.scalars
            for f in 0..<features { (dGamma[f], dBeta[f]) = (dGamma[f] + dyNormedSum[f], dBeta[f] + dySum[f]) }
            for r in 0..<rows {
                for f in 0..<features {
                    let i = r * features + f
                    let normed = (x[i] - mean[f]) * rstd[f]
                    dx[i] = g[f] * rstd[f] * (dy[i] - dySum[f] / Float(rows) - normed * dyNormedSum[f] / Float(rows))
                }
            }
        }
    }

    /// Training-mode `nn.Dropout`: zeroes each value with probability p and scales the others by 1/(1 − p),
    /// drawing from a seeded generator. Models take `Dropout?`; `nil` is eval mode (deterministic).
    public struct Dropout {
        public var generator: SeededGenerator
        public let hiddenProbability: Float    // `hidden_dropout_prob`: embeddings and both branch outputs
        public let attentionProbability: Float // `attention_probs_dropout_prob`

        public init(config: ViTMSNConfig, seed: UInt64) {
            generator = SeededGenerator(seed: seed)
            hiddenProbability = Float(config.hiddenDropoutProb)
            attentionProbability = Float(config.attentionProbsDropoutProb)
        }

        /// Drops `count` values in place with probability `p`; returns the multipliers (0 or 1/(1 − p)) the
        /// backward needs, or nil when p = 0.
        mutating func apply(_ x: UnsafeMutablePointer<Float>, count: Int, probability p: Float) -> Buffer? {
            guard p > 0 else { return nil }
            let multipliers = Buffer(count)
            let kept = 1 / (1 - p)
            for i in 0..<count {
                let uniform = Float(generator.next() >> 40) * 0x1p-24 // 24 random bits in [0, 1)
                multipliers.pointer[i] = uniform < p ? 0 : kept
                x[i] *= multipliers.pointer[i]
            }
            return multipliers
        }
    }
}

/// Owned Float32 scratch memory, freed with the object.
package final class Buffer {
    package let pointer: UnsafeMutablePointer<Float>
    package let count: Int

    package init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
    }

    package convenience init(zeros count: Int) {
        self.init(count)
        pointer.initialize(repeating: 0, count: count)
    }

    /// A copy of the first `count` floats at `source`.
    package convenience init(copying source: UnsafePointer<Float>, count: Int) {
        self.init(count)
        pointer.update(from: source, count: count)
    }

    /// The contents as a tensor of `shape` (copied).
    package func tensor(_ shape: [Int]) -> Tensor {
        var result = Tensor(zeros: shape)
        result.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: pointer, count: $0.count) }
        return result
    }

    deinit { pointer.deallocate() }
}
