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

/// `y[rows, out] = x[rows, in] · wᵀ + bias`, with `w` stored (out, in) as PyTorch's `nn.Linear` does.
public func linearForward(
    x: UnsafePointer<Float>, weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
    y: UnsafeMutablePointer<Float>, rows: Int, inFeatures: Int, outFeatures: Int
) {
    if let bias {
        // Seed every output row with the bias and let the GEMM accumulate onto it (beta = 1).
        for r in 0..<rows { (y + r * outFeatures).update(from: bias, count: outFeatures) }
    }
    gemm(
        transposeA: false, transposeB: true, m: rows, n: outFeatures, k: inFeatures,
        a: x, lda: inFeatures, b: weight, ldb: inFeatures,
        beta: bias == nil ? 0 : 1, c: y, ldc: outFeatures
    )
}
