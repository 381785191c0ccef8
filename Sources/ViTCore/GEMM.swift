#if canImport(Accelerate)
import Accelerate
#else
import COpenBLAS
#endif

/// Row-major single-precision GEMM: `C = alpha * op(A) * op(B) + beta * C`, with `op(A)` M×K and `op(B)` K×N.
/// The only matrix-product entry point of the project, so the BLAS choice lives in one place.
@inlinable
public func gemm(
    transposeA: Bool, transposeB: Bool,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int
) {
    guard m > 0, n > 0 else { return }
    cblas_sgemm(
        CblasRowMajor,
        transposeA ? CblasTrans : CblasNoTrans,
        transposeB ? CblasTrans : CblasNoTrans,
        Int32(m), Int32(n), Int32(k),
        alpha, a, Int32(lda), b, Int32(ldb),
        beta, c, Int32(ldc)
    )
}

/// BLAS threads are turned off once, before the first product: the callers split work across cores.
let singleThreadedBLAS: Void = {
    #if !canImport(Accelerate)
    openblas_set_num_threads(1)
    #endif
}()

/// `y[rows, out] = x[rows, in] · wᵀ + bias` (or `y += …` when `accumulate`), with `w` stored (out, in) as
/// PyTorch's `nn.Linear` does. Many rows are split across `parallelism` by rows; few rows (a batch of one
/// image) by output columns, so that every GEMM keeps enough rows to run at full speed.
public func linearForward(
    x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    y: UnsafeMutablePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int,
    accumulate: Bool = false, parallelism: Parallelism = .serial
) {
    func product(rows rowRange: Range<Int>, columns: Range<Int>) {
        let y = y + rowRange.lowerBound * outFeatures + columns.lowerBound
        if let bias {
            // Start from the bias (or add it to what is there) and let the GEMM accumulate (beta = 1).
            for r in 0..<rowRange.count {
                if accumulate {
                    addInPlace(y + r * outFeatures, bias + columns.lowerBound, count: columns.count)
                } else {
                    (y + r * outFeatures).update(from: bias + columns.lowerBound, count: columns.count)
                }
            }
        }
        gemm(
            transposeA: false, transposeB: true, m: rowRange.count, n: columns.count, k: inFeatures,
            a: x + rowRange.lowerBound * inFeatures, lda: inFeatures, b: weight + columns.lowerBound * inFeatures, ldb: inFeatures,
            beta: bias == nil && !accumulate ? 0 : 1, c: y, ldc: outFeatures
        )
    }
    if parallelism.splitsByColumns(rows: rows, columns: outFeatures) {
        parallelism.forEachRowBlock(of: outFeatures) { product(rows: 0..<rows, columns: $0) }
    } else {
        parallelism.forEachRowBlock(of: rows) { product(rows: $0, columns: 0..<outFeatures) }
    }
}

/// The backward of `linearForward`, given its input `x` (rows, in) and the output gradient `dy` (rows, out):
/// `dWeight (out, in) += dyᵀ · x`, `dBias += Σ_rows dy`, and `dx (rows, in) = dy · w` (or `+=` when
/// `accumulateInput`; skipped when `dx` is nil). Parameter gradients accumulate, so micro-batches add up.
/// The weight gradient is split across cores by output features, the input gradient by rows.
public func linearBackward(
    x: UnsafePointer<Float>, weight: UnsafePointer<Float>, dy: UnsafePointer<Float>,
    dx: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>?,
    rows: Int, inFeatures: Int, outFeatures: Int, accumulateInput: Bool = false, parallelism: Parallelism = .serial
) {
    parallelism.forEachRowBlock(of: outFeatures) { features in
        gemm(
            transposeA: true, transposeB: false, m: features.count, n: inFeatures, k: rows,
            a: dy + features.lowerBound, lda: outFeatures, b: x, ldb: inFeatures,
            beta: 1, c: dWeight + features.lowerBound * inFeatures, ldc: inFeatures
        )
        if let dBias {
            for r in 0..<rows { addInPlace(dBias + features.lowerBound, dy + r * outFeatures + features.lowerBound, count: features.count) }
        }
    }
    guard let dx else { return }
    parallelism.forEachRowBlock(of: rows) { rowRange in
        gemm(
            transposeA: false, transposeB: false, m: rowRange.count, n: inFeatures, k: outFeatures,
            a: dy + rowRange.lowerBound * outFeatures, lda: outFeatures, b: weight, ldb: inFeatures,
            beta: accumulateInput ? 1 : 0, c: dx + rowRange.lowerBound * inFeatures, ldc: inFeatures
        )
    }
}
