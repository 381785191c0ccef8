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

/// The backward of `multiHeadAttention` (no head mask) from the probabilities it kept, (B, heads, S, S).
/// `dropped`, if given, holds the probabilities after dropout, `P ⊙ keep / (1 − p)`, which the context was
/// computed from; `dropMultipliers` the matching `keep / (1 − p)` factors. Per (batch, head):
/// `dV = P_dᵀ dC`, `dP_d = dC Vᵀ`, `dP = dP_d ⊙ multipliers`, `dS = scale · P ⊙ (dP − rowsum(dP ⊙ P))`,
/// `dQ = dS K`, `dK = dSᵀ Q`. Gradients are written (not accumulated) in the (B, S, heads·headDim) layout;
/// `scratch` holds S·S floats per thread.
public func multiHeadAttentionBackward(
    query: UnsafePointer<Float>, key: UnsafePointer<Float>, value: UnsafePointer<Float>,
    probabilities: UnsafePointer<Float>, dropped: UnsafePointer<Float>?, dropMultipliers: UnsafePointer<Float>?,
    contextGradient dContext: UnsafePointer<Float>,
    queryGradient dQuery: UnsafeMutablePointer<Float>, keyGradient dKey: UnsafeMutablePointer<Float>,
    valueGradient dValue: UnsafeMutablePointer<Float>,
    batch: Int, sequence: Int, heads: Int, headDim: Int, scale: Float,
    scratch: UnsafeMutablePointer<Float>, parallelism: Parallelism = .serial
) {
    let width = heads * headDim
    let square = sequence * sequence
    parallelism.forEachChunk(of: batch * heads) { chunk, pairs in
        let dScores = scratch + chunk * square
        for pair in pairs {
            let offset = (pair / heads) * sequence * width + (pair % heads) * headDim
            let p = probabilities + pair * square
            let usedP = dropped.map { $0 + pair * square } ?? p
            // dV_h (S, hd) = P_dᵀ (S, S) · dC_h (S, hd)
            gemm(
                transposeA: true, transposeB: false, m: sequence, n: headDim, k: sequence,
                a: usedP, lda: sequence, b: dContext + offset, ldb: width, c: dValue + offset, ldc: width)
            // dP (S, S) = dC_h (S, hd) · V_hᵀ (hd, S)
            gemm(
                transposeA: false, transposeB: true, m: sequence, n: sequence, k: headDim,
                a: dContext + offset, lda: width, b: value + offset, ldb: width, c: dScores, ldc: sequence)
            if let dropMultipliers {
                let m = dropMultipliers + pair * square
                for i in 0..<square { dScores[i] *= m[i] }
            }
            softmaxBackwardRows(probabilities: p, gradient: dScores, rows: sequence, cols: sequence)
            // dQ_h = scale · dS · K_h;  dK_h = scale · dSᵀ · Q_h
            gemm(
                transposeA: false, transposeB: false, m: sequence, n: headDim, k: sequence, alpha: scale,
                a: dScores, lda: sequence, b: key + offset, ldb: width, c: dQuery + offset, ldc: width)
            gemm(
                transposeA: true, transposeB: false, m: sequence, n: headDim, k: sequence, alpha: scale,
                a: dScores, lda: sequence, b: query + offset, ldb: width, c: dKey + offset, ldc: width)
        }
    }
}

/// `context_h = P_h V_h` for every (batch, head), from probabilities laid out (B, heads, S, S): the second half
/// of `multiHeadAttention`, for callers that change the probabilities in between (attention dropout).
public func attentionContext(
    probabilities: UnsafePointer<Float>, value: UnsafePointer<Float>, context: UnsafeMutablePointer<Float>,
    batch: Int, sequence: Int, heads: Int, headDim: Int, parallelism: Parallelism = .serial
) {
    let width = heads * headDim
    parallelism.forEachChunk(of: batch * heads) { pairs in
        for pair in pairs {
            let offset = (pair / heads) * sequence * width + (pair % heads) * headDim
            gemm(
                transposeA: false, transposeB: false, m: sequence, n: headDim, k: sequence,
                a: probabilities + pair * sequence * sequence, lda: sequence, b: value + offset, ldb: width,
                c: context + offset, ldc: width)
        }
    }
}
