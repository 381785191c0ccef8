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
