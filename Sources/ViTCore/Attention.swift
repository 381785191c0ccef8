import CKernels

/// Query rows scored at a time when attention probabilities are not returned.
package let queryBlock = 64

/// Keys scored at a time: longer sequences are split into key blocks of at most this many, with an online
/// softmax across them, so a query block's scores stay in the L2 cache.
let keyBlockLimit = 512

/// Floats of scratch the fused kernel needs per thread (packed keys, values and one row tile's scores), or nil
/// where it does not run: a sequence of several key blocks, or a head above 384.
func fusedAttentionScratch(sequence: Int, headDim: Int) -> Int? {
    guard keyBlocks(sequence: sequence).count == 1 else { return nil }
    let count = vitmsn_attention_scratch_count(sequence, headDim)
    return count > 0 ? count : nil
}

/// Floats of scratch `multiHeadAttention` needs per thread without returned probabilities: the fused kernel's,
/// or (key blocks) one query block's scores, or the int8 kernel's, whichever is most.
func attentionThreadScratch(sequence: Int, headDim: Int) -> Int {
    let float = fusedAttentionScratch(sequence: sequence, headDim: headDim) ?? min(queryBlock, sequence) * sequence
    return max(float, (vitmsn_attention_int8_scratch_bytes(sequence, headDim) + 3) / 4)
}

/// Floats of scratch `multiHeadAttention` needs without returned probabilities, for `threads` threads.
package func attentionScratchCount(sequence: Int, headDim: Int, threads: Int) -> Int {
    threads * attentionThreadScratch(sequence: sequence, headDim: headDim)
}

/// The key blocks of a sequence: as even as possible, each starting at a multiple of 32 (a packed panel).
func keyBlocks(sequence: Int) -> [Range<Int>] {
    let count = (sequence + keyBlockLimit - 1) / keyBlockLimit
    let size = ((sequence + count - 1) / count + 31) / 32 * 32
    return stride(from: 0, to: sequence, by: size).map { $0..<min($0 + size, sequence) }
}

/// Multi-head scaled dot-product attention over tokens laid out (B, S, heads·headDim), as the query, key and
/// value projections produce them: each head is a column slice, so no transposes are materialised.
///
/// For every (batch, head): `P = softmax(scale · Q Kᵀ)` (S×S), `P *= headMask[head]`, `context = P V`, with
/// K and V packed once per head.
/// - probabilities: if given, (B, heads, S, S) receives `P` (after the head mask), as Transformers' eager
///   attention returns it. Otherwise a sequence of one key block runs the fused kernel (scores, softmax and
///   context per tile of query rows, in L1; the same sums in the same order), and a longer one goes in
///   query blocks of `queryBlock` rows and keys in blocks of at most `keyBlockLimit` with an online softmax
///   (running row maximum and sum, the context rescaled as the maximum grows): memory linear in the
///   sequence length, and scores that stay in cache. `scratch` holds `attentionScratchCount` floats.
/// - int8: without returned probabilities, the products run on the int8 kernel instead, as dynamic quantisation
///   runs a Linear (`vitmsn_attention_head_int8`); with them, in float as above.
/// The (batch, head) pairs are split across `parallelism`.
package func multiHeadAttention(
    query: UnsafePointer<Float>, key: UnsafePointer<Float>, value: UnsafePointer<Float>,
    context: UnsafeMutablePointer<Float>,
    batch: Int, sequence: Int, heads: Int, headDim: Int, scale: Float,
    headMask: [Float]?,
    probabilities: UnsafeMutablePointer<Float>?,
    scratch: UnsafeMutablePointer<Float>,
    int8: Bool = false,
    parallelism: Parallelism = .serial
) {
    let width = heads * headDim
    let fusedScratch = int8 ? attentionThreadScratch(sequence: sequence, headDim: headDim) : fusedAttentionScratch(sequence: sequence, headDim: headDim)
    if probabilities == nil, let perThread = fusedScratch {
        parallelism.forEachChunk(of: batch * heads) { chunk, pairs in
            for pair in pairs {
                let offset = (pair / heads) * sequence * width + (pair % heads) * headDim
                let (q, k, v, out) = (query + offset, key + offset, value + offset, context + offset)
                let (mask, threadScratch) = (headMask?[pair % heads] ?? 1, scratch + chunk * perThread)
                let status = int8
                    ? vitmsn_attention_head_int8(q, k, v, out, width, sequence, headDim, scale, mask, threadScratch)
                    : vitmsn_attention_head(q, k, v, out, width, sequence, headDim, scale, mask, threadScratch)
                precondition(status == 0, "the \(int8 ? "int8" : "float") attention kernel refused a head of \(headDim)")
            }
        }
        return
    }
    let blocks = probabilities == nil ? keyBlocks(sequence: sequence) : [0..<sequence]
    let perThread = min(queryBlock, sequence) * sequence
    parallelism.forEachChunk(of: batch * heads) { chunk, pairs in
        let threadScratch = scratch + chunk * perThread
        let queryRows = probabilities == nil ? queryBlock : sequence
        var (rowMaximum, rowSum, rescale) = ([Float](repeating: 0, count: queryRows), [Float](repeating: 0, count: queryRows), [Float](repeating: 0, count: queryRows))
        for pair in pairs {
            let (b, h) = (pair / heads, pair % heads)
            let offset = b * sequence * width + h * headDim
            let mask = headMask?[h] ?? 1
            // Kᵀ as the scores' right operand (hd × S); V per key block (keys × hd).
            let keys = PackedMatrix(packing: key + offset, ldb: width, transposed: true, k: headDim, n: sequence)
            let values = blocks.map { PackedMatrix(packing: value + offset + $0.lowerBound * width, ldb: width, transposed: false, k: $0.count, n: headDim) }
            for first in stride(from: 0, to: sequence, by: queryRows) {
                let rows = min(queryRows, sequence - first)
                let q = query + offset + first * width, out = context + offset + first * width
                if blocks.count == 1 {
                    let scores = probabilities.map { $0 + pair * sequence * sequence } ?? threadScratch
                    // scores (rows, S) = scale · Q_h (rows, hd) · K_hᵀ; P = softmax; context_h = P · V_h
                    gemm(a: q, lda: width, b: keys, c: scores, ldc: sequence, m: rows, epilogue: Epilogue(alpha: scale))
                    softmaxRows(scores, rows: rows, cols: sequence)
                    if mask != 1 { scaleInPlace(scores, by: mask, count: rows * sequence) }
                    gemm(a: scores, lda: sequence, b: values[0], c: out, ldc: width, m: rows)
                    continue
                }
                for (index, keyRange) in blocks.enumerated() {
                    let n = keyRange.count
                    // scores (rows, n) = scale · Q_h · K_h[keyRange]ᵀ: columns keyRange of the packed keys.
                    blockScores(q: q, lda: width, keys: keys, columns: keyRange, scale: scale, into: threadScratch, rows: rows)
                    vitmsn_online_softmax(threadScratch, rows, n, &rowMaximum, &rowSum, &rescale, index == 0 ? 1 : 0)
                    if index > 0 { for r in 0..<rows where rescale[r] != 1 { scaleInPlace(out + r * width, by: rescale[r], count: headDim) } }
                    // context_h (+)= exp(scores) · V_h[keyRange]
                    gemm(a: threadScratch, lda: n, b: values[index], c: out, ldc: width, m: rows, epilogue: Epilogue(beta: index == 0 ? 0 : 1))
                }
                for r in 0..<rows { scaleInPlace(out + r * width, by: mask / rowSum[r], count: headDim) }
            }
        }
    }
}

/// Columns `columns` of `scale · Q · Kᵀ` into `scores` (rows × columns.count), from the packed keys.
private func blockScores(
    q: UnsafePointer<Float>, lda: Int, keys: PackedMatrix, columns: Range<Int>, scale: Float,
    into scores: UnsafeMutablePointer<Float>, rows: Int
) {
    // The kernel addresses C from column 0; the block's scores start at column `columns.lowerBound`.
    gemm(a: q, lda: lda, b: keys, c: scores - columns.lowerBound, ldc: columns.count, m: rows,
         columns: columns, epilogue: Epilogue(alpha: scale))
}

/// The backward of `multiHeadAttention` (no head mask) from the probabilities it kept, (B, heads, S, S).
/// `dropped`, if given, holds the probabilities after dropout, `P ⊙ keep / (1 − p)`, which the context was
/// computed from; `dropMultipliers` the matching `keep / (1 − p)` factors. Per (batch, head):
/// `dV = P_dᵀ dC`, `dP_d = dC Vᵀ`, `dP = dP_d ⊙ multipliers`, `dS = scale · P ⊙ (dP − rowsum(dP ⊙ P))`,
/// `dQ = dS K`, `dK = dSᵀ Q`. Gradients are written (not accumulated) in the (B, S, heads·headDim) layout;
/// `scratch` holds S·S floats per thread.
package func multiHeadAttentionBackward(
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
package func attentionContext(
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
