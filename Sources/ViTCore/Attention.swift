/// Multi-head scaled dot-product attention over tokens laid out (B, S, heads·headDim), as the query, key and
/// value projections produce them: each head is a column slice, so no transposes are materialised.
///
/// For every (batch, head): `P = softmax(scale · Q Kᵀ)` (S×S), `P *= headMask[head]`, `context = P V`.
/// - probabilities: if given, (B, heads, S, S) receives `P` (after the head mask), as Transformers' eager
///   attention returns it; otherwise `scratch` (S·S floats per thread) holds one head at a time.
/// The (batch, head) pairs are split across `parallelism`.
public func multiHeadAttention(
    query: UnsafePointer<Float>, key: UnsafePointer<Float>, value: UnsafePointer<Float>,
    context: UnsafeMutablePointer<Float>,
    batch: Int, sequence: Int, heads: Int, headDim: Int, scale: Float,
    headMask: [Float]?,
    probabilities: UnsafeMutablePointer<Float>?,
    scratch: UnsafeMutablePointer<Float>,
    parallelism: Parallelism = .serial
) {
    let width = heads * headDim
    parallelism.forEachChunk(of: batch * heads) { chunk, pairs in
        let threadScratch = scratch + chunk * sequence * sequence
        for pair in pairs {
            let (b, h) = (pair / heads, pair % heads)
            let offset = b * sequence * width + h * headDim
            let scores = probabilities.map { $0 + pair * sequence * sequence } ?? threadScratch
            // scores (S, S) = scale · Q_h (S, hd) · K_hᵀ (hd, S)
            gemm(
                transposeA: false, transposeB: true, m: sequence, n: sequence, k: headDim, alpha: scale,
                a: query + offset, lda: width, b: key + offset, ldb: width, c: scores, ldc: sequence
            )
            softmaxRows(scores, rows: sequence, cols: sequence)
            if let headMask, headMask[h] != 1 { scaleInPlace(scores, by: headMask[h], count: sequence * sequence) }
            // context_h (S, hd) = P (S, S) · V_h (S, hd)
            gemm(
                transposeA: false, transposeB: false, m: sequence, n: headDim, k: sequence,
                a: scores, lda: sequence, b: value + offset, ldb: width, c: context + offset, ldc: width
            )
        }
    }
}
