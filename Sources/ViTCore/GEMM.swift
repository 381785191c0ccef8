import CKernels
import Foundation

/// op(B) (K × N) in the GEMM kernel's panel layout: packed once per weight (at load or first use) or per
/// call for operands that change. The layout follows the kernel dispatched at start-up and never leaves
/// the process.
public final class PackedMatrix: @unchecked Sendable {
    public let k: Int
    public let n: Int
    let data: UnsafeMutablePointer<Float>

    /// Packs op(B): `b[n·ldb + k]` when `transposed` (an `nn.Linear` weight (out, in) is Wᵀ transposed),
    /// else `b[k·ldb + n]`. Panels are split across `parallelism`.
    public init(packing b: UnsafePointer<Float>, ldb: Int, transposed: Bool, k: Int, n: Int, parallelism: Parallelism = .serial) {
        (self.k, self.n) = (k, n)
        var memory: UnsafeMutableRawPointer?
        guard posix_memalign(&memory, 64, max(vitmsn_gemm_packed_count(k, n), 1) * 4) == 0, let memory else {
            fatalError("out of memory packing a \(k)×\(n) matrix")
        }
        data = memory.assumingMemoryBound(to: Float.self)
        let panels = (n + vitmsn_gemm_panel_width() - 1) / vitmsn_gemm_panel_width()
        let data = UncheckedSendable(data)
        parallelism.forEachChunk(of: panels, minimumChunk: max(1, 32_768 / max(k, 1))) { range in
            vitmsn_gemm_pack_b(b, ldb, transposed ? 1 : 0, k, n, range.lowerBound, range.upperBound, data.value)
        }
    }

    /// Bytes the packed copy takes.
    public var byteCount: Int { vitmsn_gemm_packed_count(k, n) * 4 }

    deinit { free(data) }
}

/// What a product does with each finished element: `C = activation(alpha · A·B + bias) + beta · C`. The
/// activation needs `beta == 0`; `beta = 1` fuses a residual add.
public struct Epilogue {
    public var alpha: Float = 1
    public var beta: Float = 0
    public var bias: UnsafePointer<Float>? = nil
    public var activation: Activation? = nil

    public init(alpha: Float = 1, beta: Float = 0, bias: UnsafePointer<Float>? = nil, activation: Activation? = nil) {
        (self.alpha, self.beta, self.bias, self.activation) = (alpha, beta, bias, activation)
    }
}

/// `C (m × B.n) = epilogue(op(A) · B)` with B packed; `op(A)` is m × B.k (`a[r·lda + k]`, or `a[k·lda + r]`
/// when `transposeA`); with `columns` (starting at a multiple of 32), only those columns of C, serially.
/// The project's one matrix product: every result element sums over K in a fixed order, so the bits do
/// not depend on `parallelism` (`vitmsn_gemm_part` says how the work is split).
package func gemm(
    a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false, b: PackedMatrix,
    c: UnsafeMutablePointer<Float>, ldc: Int, m: Int, columns: Range<Int>? = nil, epilogue: Epilogue = Epilogue(),
    parallelism: Parallelism = .serial
) {
    let (n, k) = (b.n, b.k)
    guard m > 0, n > 0 else { return }
    let call = vitmsn_gemm_call(
        m: m, n: n, k: k, a: a, lda: lda, transpose_a: transposeA ? 1 : 0, packed_b: b.data, c: c, ldc: ldc,
        epilogue: vitmsn_epilogue(alpha: epilogue.alpha, beta: epilogue.beta, bias: epilogue.bias, activation: epilogue.activation.map { Int32($0.kernel.rawValue) } ?? -1),
        m0: 0, m1: m, n0: columns?.lowerBound ?? 0, n1: columns?.upperBound ?? n)
    if let columns {
        precondition(columns.lowerBound % 32 == 0 && columns.upperBound <= n, "columns \(columns) of \(n)")
        var part = call
        precondition(vitmsn_gemm_packed(&part) == 0, "GEMM kernel refused its arguments")
        return
    }
    if k == 0 { // an empty sum: only the epilogue's constant part
        for r in 0..<m { for j in 0..<n { c[r * ldc + j] = (epilogue.bias?[j] ?? 0) + (epilogue.beta == 0 ? 0 : epilogue.beta * c[r * ldc + j]) } }
        if let activation = epilogue.activation { for r in 0..<m { activation.apply(c + r * ldc, count: n) } }
        return
    }
    let parts = vitmsn_gemm_parts([call], parallelism.threads)
    let shared = UncheckedSendable(call)
    Parallelism(threads: parts).forEachChunk(of: parts) { range in
        var part = vitmsn_gemm_part([shared.value], range.lowerBound, parts)
        precondition(vitmsn_gemm_packed(&part) == 0, "GEMM kernel refused its arguments")
    }
}

/// Row-major `C = alpha · op(A) · op(B) + beta · C`, with `op(A)` M×K and `op(B)` K×N: B is packed for this
/// call (so use the packed form for operands that are reused).
package func gemm(
    transposeA: Bool, transposeB: Bool,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    parallelism: Parallelism = .serial
) {
    guard m > 0, n > 0 else { return }
    let packed = PackedMatrix(packing: b, ldb: ldb, transposed: transposeB, k: k, n: n, parallelism: parallelism)
    gemm(a: a, lda: lda, transposeA: transposeA, b: packed, c: c, ldc: ldc, m: m, epilogue: Epilogue(alpha: alpha, beta: beta), parallelism: parallelism)
}

/// `y[rows, out] = x[rows, in] · wᵀ + bias` (or `y += …` when `accumulate`: a fused residual add), `w` packed
/// from PyTorch's (out, in) `nn.Linear` layout.
package func linearForward(
    x: UnsafePointer<Float>, weight: PackedMatrix, bias: UnsafePointer<Float>?,
    y: UnsafeMutablePointer<Float>, rows: Int, accumulate: Bool = false, activation: Activation? = nil,
    parallelism: Parallelism = .serial
) {
    gemm(
        a: x, lda: weight.k, b: weight, c: y, ldc: weight.n, m: rows,
        epilogue: Epilogue(beta: accumulate ? 1 : 0, bias: bias, activation: activation), parallelism: parallelism)
}

/// The backward of `linearForward`, given its input `x` (rows, in) and the output gradient `dy` (rows, out):
/// `dWeight (out, in) += dyᵀ · x`, `dBias += Σ_rows dy`, and `dx (rows, in) = dy · w` (or `+=` when
/// `accumulateInput`; skipped when `dx` is nil). Parameter gradients accumulate, so micro-batches add up.
/// The bias gradient sums rows in order, split across cores by features.
package func linearBackward(
    x: UnsafePointer<Float>, weight: UnsafePointer<Float>, dy: UnsafePointer<Float>,
    dx: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>?,
    rows: Int, inFeatures: Int, outFeatures: Int, accumulateInput: Bool = false, parallelism: Parallelism = .serial
) {
    gemm(
        transposeA: true, transposeB: false, m: outFeatures, n: inFeatures, k: rows,
        a: dy, lda: outFeatures, b: x, ldb: inFeatures, beta: 1, c: dWeight, ldc: inFeatures, parallelism: parallelism)
    if let dBias {
        parallelism.forEachChunk(of: outFeatures, minimumChunk: 64) { features in
            for r in 0..<rows { addInPlace(dBias + features.lowerBound, dy + r * outFeatures + features.lowerBound, count: features.count) }
        }
    }
    guard let dx else { return }
    gemm(
        transposeA: false, transposeB: false, m: rows, n: inFeatures, k: outFeatures,
        a: dy, lda: outFeatures, b: weight, ldb: inFeatures, beta: accumulateInput ? 1 : 0, c: dx, ldc: inFeatures,
        parallelism: parallelism)
}
