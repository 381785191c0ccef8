import ViTCore

/// A layer that owns parameters. `visitParameters` names each one as the checkpoint does, relative to the
/// layer; composite layers prefix their children's names. Loading, saving and (later) optimisers all walk
/// the model through this one function, so the name table lives in the layer types themselves.
public protocol Module: AnyObject {
    func visitParameters(_ visit: (String, inout Tensor) throws -> Void) rethrows
}

extension Module {
    /// Visits `child`'s parameters under `prefix.`.
    @inline(__always)
    func visit(_ prefix: String, _ child: Module, _ visit: (String, inout Tensor) throws -> Void) rethrows {
        try child.visitParameters { name, tensor in try visit(prefix + "." + name, &tensor) }
    }

    /// Every parameter with its full checkpoint name, in definition order.
    public var namedParameters: [(name: String, tensor: Tensor)] {
        var result: [(String, Tensor)] = []
        visitParameters { name, tensor in result.append((name, tensor)) }
        return result
    }

    public var parameterCount: Int { namedParameters.reduce(0) { $0 + $1.tensor.count } }
}

/// `nn.Linear`: `y = x Wᵀ + b`, weight stored (out, in).
/// A stride-equals-kernel `nn.Conv2d` is the same map on flattened patches; it keeps its (out, C, kh, kw)
/// weight shape through `weightShape`, so checkpoints load without reshaping.
public final class Linear: Module {
    public var weight: Tensor // (out, in)
    public var bias: Tensor?  // (out)
    public let inFeatures: Int
    public let outFeatures: Int

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, weightShape: [Int]? = nil) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        let shape = weightShape ?? [outFeatures, inFeatures]
        precondition(Tensor.elementCount(shape) == inFeatures * outFeatures, "weight shape \(shape) for \(inFeatures) → \(outFeatures)")
        weight = Tensor(zeros: shape)
        self.bias = bias ? Tensor(zeros: [outFeatures]) : nil
    }

    public func visitParameters(_ visit: (String, inout Tensor) throws -> Void) rethrows {
        try visit("weight", &weight)
        if bias != nil { try visit("bias", &bias!) }
    }

    /// y (rows, out) = x (rows, in) · Wᵀ + b, or y += x · Wᵀ + b when `accumulate` (a residual add fused
    /// into the GEMM).
    public func forward(
        _ x: UnsafePointer<Float>, rows: Int, into y: UnsafeMutablePointer<Float>,
        accumulate: Bool = false, parallelism: Parallelism = .serial
    ) {
        weight.withUnsafeBufferPointer { w in
            let b = bias?.storage.base
            linearForward(
                x: x, weight: w.baseAddress!, bias: b.map { UnsafePointer($0) }, y: y, rows: rows,
                inFeatures: inFeatures, outFeatures: outFeatures, accumulate: accumulate, parallelism: parallelism)
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
    public let eps: Float

    public init(_ dim: Int, eps: Float) {
        weight = Tensor(shape: [dim], repeating: 1)
        bias = Tensor(zeros: [dim])
        self.eps = eps
    }

    public func visitParameters(_ visit: (String, inout Tensor) throws -> Void) rethrows {
        try visit("weight", &weight)
        try visit("bias", &bias)
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
}

/// Owned Float32 scratch memory, freed with the object.
final class Buffer {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int

    init(_ count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
    }

    deinit { pointer.deallocate() }
}
