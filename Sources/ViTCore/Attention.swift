/// Query rows scored at a time when attention probabilities are not returned.
public let queryBlock = 64

/// Floats of scratch `multiHeadAttention` needs without returned probabilities: one query block per thread.
public func attentionScratchCount(sequence: Int, threads: Int) -> Int { threads * min(queryBlock, sequence) * sequence }

/// Multi-head scaled dot-product attention over tokens laid out (B, S, heads·headDim), as the query, key and
/// value projections produce them: each head is a column slice, so no transposes are materialised.
///
/// For every (batch, head): `P = softmax(scale · Q Kᵀ)` (S×S), `P *= headMask[head]`, `context = P V`.
/// - probabilities: if given, (B, heads, S, S) receives `P` (after the head mask), as Transformers' eager
///   attention returns it. Otherwise queries go in blocks of `queryBlock` rows, each scored against every
///   key, so `scratch` needs only `queryBlock`·S floats per thread: memory linear in the sequence length,
///   and score rows that stay in cache. (Each block sees all keys, so no online softmax is needed.)
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
        let threadScratch = scratch + chunk * min(queryBlock, sequence) * sequence
        let block = probabilities == nil ? queryBlock : sequence
        for pair in pairs {
            let (b, h) = (pair / heads, pair % heads)
            let offset = b * sequence * width + h * headDim
            for first in stride(from: 0, to: sequence, by: block) {
                let rows = min(block, sequence - first)
                let scores = probabilities.map { $0 + pair * sequence * sequence } ?? threadScratch
                let rowOffset = offset + first * width
                // scores (rows, S) = scale · Q_h[first..] (rows, hd) · K_hᵀ (hd, S)
                gemm(
                    transposeA: false, transposeB: true, m: rows, n: sequence, k: headDim, alpha: scale,
                    a: query + rowOffset, lda: width, b: key + offset, ldb: width, c: scores, ldc: sequence
                )
                softmaxRows(scores, rows: rows, cols: sequence)
                if let headMask, headMask[h] != 1 { scaleInPlace(scores, by: headMask[h], count: rows * sequence) }
                // context_h[first..] (rows, hd) = P (rows, S) · V_h (S, hd)
                gemm(
                    transposeA: false, transposeB: false, m: rows, n: headDim, k: sequence,
                    a: scores, lda: sequence, b: value + offset, ldb: width, c: context + rowOffset, ldc: width
                )
            }
        }
    }
}
