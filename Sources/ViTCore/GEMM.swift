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
/// PyTorch's `nn.Linear` does. Rows are split across `parallelism`.
public func linearForward(
    x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    y: UnsafeMutablePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int,
    accumulate: Bool = false, parallelism: Parallelism = .serial
) {
    parallelism.forEachRowBlock(of: rows) { chunk in
        let (x, y) = (x + chunk.lowerBound * inFeatures, y + chunk.lowerBound * outFeatures)
        if let bias {
            // Start from the bias (or add it to what is there) and let the GEMM accumulate (beta = 1).
            for r in 0..<chunk.count {
                if accumulate { addInPlace(y + r * outFeatures, bias, count: outFeatures) } else { (y + r * outFeatures).update(from: bias, count: outFeatures) }
            }
        }
        gemm(
            transposeA: false, transposeB: true, m: chunk.count, n: outFeatures, k: inFeatures,
            a: x, lda: inFeatures, b: weight, ldb: inFeatures,
            beta: bias == nil && !accumulate ? 0 : 1, c: y, ldc: outFeatures
        )
    }
}
