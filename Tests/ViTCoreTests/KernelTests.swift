import Foundation
import XCTest
@testable import ViTCore

final class VectorMathTests: XCTestCase {
    /// The worst error of `f` against a Double reference over an evenly spaced grid.
    func worstError(_ f: ([Float]) -> [Float], _ reference: (Double) -> Double, in range: ClosedRange<Float>, relative: Bool) -> Double {
        let xs = (0..<20_000).map { range.lowerBound + (range.upperBound - range.lowerBound) * Float($0) / 20_000 }
        return zip(xs, f(xs)).map { x, y in
            let exact = reference(Double(x))
            return abs(Double(y) - exact) / (relative ? max(abs(exact), 1e-30) : 1)
        }.max()!
    }

    func testExp() {
        XCTAssertLessThan(worstError(VectorMath.exp, Foundation.exp, in: -80...80, relative: true), 3e-7)
        XCTAssertEqual(VectorMath.exp([0]), [1])
        XCTAssertLessThan(VectorMath.exp([-1000])[0], 1e-37)
        XCTAssertTrue(VectorMath.exp([1000])[0].isFinite)
    }

    func testErfMatchesTheAbramowitzStegunBound() {
        XCTAssertLessThan(worstError(VectorMath.erf, Foundation.erf, in: -6...6, relative: false), 6e-7)
        XCTAssertEqual(VectorMath.erf([0, -0.5])[0], 0, accuracy: 1e-7)
        XCTAssertLessThan(VectorMath.erf([-0.5])[0], 0, "odd function")
    }

    func testThisCPURunsTheWidestBuildItHas() throws {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let flags = Set(cpuinfo.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).map(String.init))
        try XCTSkipIf(cpuinfo.isEmpty, "no /proc/cpuinfo")
        let forced = ProcessInfo.processInfo.environment["VITMSN_KERNELS"]
        let avx2 = flags.contains("avx2") && flags.contains("fma")
        let expected = forced == "generic" || !avx2 ? "generic" : flags.contains("avx512f") && forced != "avx2" ? "avx512" : "avx2+fma"
        XCTAssertEqual(VectorMath.instructionSet, expected)
    }

    /// The benchmarks' peaks count work a core can do: at most a few hundred GFLOP/s (5 GHz × two 16-lane FMAs
    /// is 320), and int8 at most 4× that (vpdpbusd's 4 products a lane). An optimised build once folded the
    /// portable FMA loop away and reported 128 million GFLOP/s (caught with `swift test -c release`).
    func testPeakLoopsMeasureRealWork() {
        let fma = VectorMath.fmaPeakGFLOPs(threads: 1, iterations: 100_000), int8 = VectorMath.int8PeakGOPs(threads: 1, iterations: 50_000)
        XCTAssertGreaterThan(fma, 0.1)
        XCTAssertLessThan(fma, 400, "\(VectorMath.instructionSet)")
        XCTAssertGreaterThan(int8, 0.1)
        XCTAssertLessThan(int8, 1600, "\(VectorMath.int8Kernels)")
    }

    func testActivationsAgainstTheirDefinitions() {
        let xs: [Float] = (0..<37).map { Float($0) * 0.37 - 6.5 } + [-100, 100, 0]
        let definitions: [Activation: (Double) -> Double] = [
            .gelu: { 0.5 * $0 * (1 + erf($0 / 2.0.squareRoot())) },
            .geluPytorchTanh: { 0.5 * $0 * (1 + tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) },
            .geluNew: { 0.5 * $0 * (1 + tanh((2 / Double.pi).squareRoot() * ($0 + 0.044715 * $0 * $0 * $0))) },
            .quickGelu: { $0 / (1 + exp(-1.702 * $0)) },
            .relu: { max($0, 0) },
            .silu: { $0 / (1 + exp(-$0)) },
        ]
        for (activation, definition) in definitions {
            var ys = xs
            ys.withUnsafeMutableBufferPointer { activation.apply($0.baseAddress!, count: $0.count) }
            for (x, y) in zip(xs, ys) {
                XCTAssertEqual(Double(y), definition(Double(x)), accuracy: 1e-6, "\(activation) at \(x)")
            }
        }
    }

    /// GELU's rational erf is clamped so that the tails are exact and NaN stays NaN.
    func testGELUTailsAreExact() {
        var ys: [Float] = [-1e30, -100, -5.7, 5.7, 100, 1e30, .nan]
        ys.withUnsafeMutableBufferPointer { Activation.gelu.apply($0.baseAddress!, count: $0.count) }
        XCTAssertEqual(Array(ys[..<6]), [0, 0, 0, 5.7, 100, 1e30])
        XCTAssertTrue(ys[6].isNaN)
    }
}

final class KernelTests: XCTestCase {
    func random(_ count: Int, seed: UInt64, scale: Float = 1, offset: Float = 0) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in offset + scale * generator.normal() }
    }

    /// op(A) (m × k) · op(B) (k × n) in Double.
    func reference(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        for r in 0..<m {
            for j in 0..<n {
                var total = 0.0
                for i in 0..<k {
                    total += Double(transposeA ? a[i * m + r] : a[r * k + i]) * Double(transposeB ? b[j * k + i] : b[i * n + j])
                }
                c[r * n + j] = total
            }
        }
        return c
    }

    /// Every transpose combination, alpha and beta, on shapes with ragged tiles and several K blocks.
    func testGEMMMatchesADoubleReference() {
        for (m, n, k) in [(1, 1, 1), (7, 13, 5), (37, 70, 800), (13, 33, 385), (300, 9, 17)] {
            for (transposeA, transposeB) in [(false, false), (false, true), (true, false), (true, true)] {
                let a = random(m * k, seed: 1), b = random(k * n, seed: 2), start = random(m * n, seed: 3)
                let exact = reference(a, b, m: m, n: n, k: k, transposeA: transposeA, transposeB: transposeB)
                var c = start
                gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: 0.5,
                     a: a, lda: transposeA ? m : k, b: b, ldb: transposeB ? k : n, beta: 2, c: &c, ldc: n)
                for i in 0..<(m * n) {
                    XCTAssertEqual(Double(c[i]), 0.5 * exact[i] + 2 * Double(start[i]), accuracy: 1e-5 * Double(k).squareRoot() * 4,
                                   "\(m)×\(n)×\(k) transposes \(transposeA) \(transposeB) at \(i)")
                }
            }
        }
    }

    /// The fused epilogues: bias then GELU, and bias plus a residual, on whole register tiles (GELU in
    /// vectors) and ragged ones (GELU per row).
    func testLinearForwardEpilogues() {
        let (rows, inFeatures, outFeatures) = (13, 19, 37)
        let x = random(rows * inFeatures, seed: 1), w = random(outFeatures * inFeatures, seed: 2), b = random(outFeatures, seed: 3)
        let residual = random(rows * outFeatures, seed: 4)
        let exact = reference(x, w, m: rows, n: outFeatures, k: inFeatures, transposeA: false, transposeB: true)
        let packed = PackedMatrix(packing: w, ldb: inFeatures, transposed: true, k: inFeatures, n: outFeatures)
        var activated = [Float](repeating: .nan, count: rows * outFeatures), added = residual
        linearForward(x: x, weight: packed, bias: b, y: &activated, rows: rows, activation: .gelu)
        linearForward(x: x, weight: packed, bias: b, y: &added, rows: rows, accumulate: true)
        for r in 0..<rows {
            for o in 0..<outFeatures {
                let i = r * outFeatures + o, pre = exact[i] + Double(b[o])
                XCTAssertEqual(Double(activated[i]), 0.5 * pre * (1 + erf(pre / 2.0.squareRoot())), accuracy: 2e-5)
                XCTAssertEqual(Double(added[i]), Double(residual[i]) + pre, accuracy: 2e-5)
            }
        }
    }

    /// The partition fixes each element's summation order, so one and two threads give the same bits, split
    /// by rows (many rows) or by columns (few rows, a batch of one image), with several K blocks.
    func testGEMMIsBitIdenticalAcrossThreadCounts() {
        for (m, n, k) in [(600, 70, 1000), (5, 900, 800), (197, 1152, 384)] {
            let a = random(m * k, seed: 5), b = random(n * k, seed: 6), bias = random(n, seed: 7)
            let packed = PackedMatrix(packing: b, ldb: k, transposed: true, k: k, n: n, parallelism: Parallelism(threads: 2))
            XCTAssertEqual(packed.byteCount, PackedMatrix(packing: b, ldb: k, transposed: true, k: k, n: n).byteCount)
            var results: [[Float]] = []
            for threads in [1, 2, 3] {
                var c = [Float](repeating: .nan, count: m * n)
                bias.withUnsafeBufferPointer { bias in
                    gemm(a: a, lda: k, b: packed, c: &c, ldc: n, m: m, epilogue: Epilogue(bias: bias.baseAddress, activation: .gelu),
                         parallelism: Parallelism(threads: threads))
                }
                results.append(c)
            }
            XCTAssertEqual(results[0], results[1], "\(m)×\(n)×\(k): 1 against 2 threads")
            XCTAssertEqual(results[0], results[2], "\(m)×\(n)×\(k): 1 against 3 threads")
        }
    }

    /// `multiHeadAttention`'s contexts for one set of inputs (B, S, heads·headDim), head mask [1, 0.5]: without
    /// probabilities (fused or key-blocked, on 2 threads) and with them.
    private func attentionContexts(_ q: [Float], _ k: [Float], _ v: [Float], batch: Int, sequence: Int, heads: Int, headDim: Int)
        -> (withoutProbabilities: [Float], withProbabilities: [Float]) {
        let count = batch * sequence * heads * headDim
        let scale = 1 / Float(headDim).squareRoot(), mask: [Float] = [1, 0.5]
        var scratch = [Float](repeating: .nan, count: attentionScratchCount(sequence: sequence, headDim: headDim, threads: 2))
        var without = [Float](repeating: .nan, count: count), with = without
        var probabilities = [Float](repeating: 0, count: batch * heads * sequence * sequence)
        multiHeadAttention(query: q, key: k, value: v, context: &without, batch: batch, sequence: sequence, heads: heads, headDim: headDim,
                           scale: scale, headMask: mask, probabilities: nil, scratch: &scratch, parallelism: Parallelism(threads: 2))
        multiHeadAttention(query: q, key: k, value: v, context: &with, batch: batch, sequence: sequence, heads: heads, headDim: headDim,
                           scale: scale, headMask: mask, probabilities: &probabilities, scratch: &scratch)
        return (without, with)
    }

    /// Long sequences split keys into blocks with an online softmax; the result matches softmax(QKᵀ)V over
    /// all keys, with and without returned probabilities, head mask included.
    func testBlockedAttentionMatchesTheFullSoftmax() {
        let (batch, sequence, heads, headDim) = (1, 600, 2, 8)
        XCTAssertEqual(keyBlocks(sequence: sequence), [0..<320, 320..<600])
        let width = heads * headDim, count = batch * sequence * width
        let q = random(count, seed: 11, scale: 2), k = random(count, seed: 12, scale: 2), v = random(count, seed: 13)
        let scale = 1 / Float(headDim).squareRoot(), mask: [Float] = [1, 0.5]
        let (blocked, full) = attentionContexts(q, k, v, batch: batch, sequence: sequence, heads: heads, headDim: headDim)
        for h in 0..<heads {
            for i in stride(from: 0, to: sequence, by: 37) {
                let scores = (0..<sequence).map { j in (0..<headDim).reduce(0.0) { $0 + Double(q[i * width + h * headDim + $1]) * Double(k[j * width + h * headDim + $1]) } * Double(scale) }
                let maximum = scores.max()!, weights = scores.map { exp($0 - maximum) }, total = weights.reduce(0, +)
                for d in 0..<headDim {
                    let exact = Double(mask[h]) * (0..<sequence).reduce(0.0) { $0 + weights[$1] * Double(v[$1 * width + h * headDim + d]) } / total
                    XCTAssertEqual(Double(blocked[i * width + h * headDim + d]), exact, accuracy: 1e-5, "blocked, head \(h) query \(i)")
                    XCTAssertEqual(Double(full[i * width + h * headDim + d]), exact, accuracy: 1e-5, "full, head \(h) query \(i)")
                }
            }
        }
    }

    /// The fused inference kernel (no probabilities returned, one key block) runs the same sums in the same
    /// order as the path that returns probabilities: the contexts agree bit for bit, over ragged query tiles,
    /// head sizes that are not a whole panel, a head mask and sequences past one K block of the GEMM (384).
    func testFusedAttentionMatchesTheProbabilitiesPath() {
        for (sequence, headDim) in [(5, 3), (13, 20), (33, 40), (197, 64), (450, 16)] {
            let count = 2 * sequence * 2 * headDim
            let q = random(count, seed: 21, scale: 2), k = random(count, seed: 22, scale: 2), v = random(count, seed: 23)
            let (fused, full) = attentionContexts(q, k, v, batch: 2, sequence: sequence, heads: 2, headDim: headDim)
            XCTAssertEqual(fused, full, "S \(sequence), head size \(headDim)")
        }
    }

    func testLayerNormIsAccurateForRowsWithALargeMean() {
        let (rows, dim) = (3, 37)
        // Residual streams can carry a mean far above their spread; 50:1 is already beyond real ViT activations.
        let x = random(rows * dim, seed: 4, scale: 1, offset: 50)
        let gamma = random(dim, seed: 5), beta = random(dim, seed: 6)
        var y = [Float](repeating: 0, count: rows * dim)
        layerNorm(x: x, gamma: gamma, beta: beta, y: &y, rows: rows, dim: dim, eps: 1e-6)
        for r in 0..<rows {
            let row = x[(r * dim)..<((r + 1) * dim)].map(Double.init)
            let mean = row.reduce(0, +) / Double(dim)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(dim)
            for i in 0..<dim {
                let exact = (row[i] - mean) / (variance + 1e-6).squareRoot() * Double(gamma[i]) + Double(beta[i])
                XCTAssertEqual(Double(y[r * dim + i]), exact, accuracy: 2e-5 * max(1, abs(exact)))
            }
        }
    }

    func testSoftmaxRowsSumToOneAndMatchDefinition() {
        let (rows, cols) = (4, 23)
        var x = random(rows * cols, seed: 7, scale: 10)
        let original = x
        x.withUnsafeMutableBufferPointer { softmaxRows($0.baseAddress!, rows: rows, cols: cols) }
        for r in 0..<rows {
            let row = original[(r * cols)..<((r + 1) * cols)].map(Double.init)
            let maximum = row.max()!
            let total = row.map { exp($0 - maximum) }.reduce(0, +)
            for c in 0..<cols { XCTAssertEqual(Double(x[r * cols + c]), exp(row[c] - maximum) / total, accuracy: 1e-6) }
        }
    }

    func testBicubicResizeKeepsConstantsAndIdentity() {
        let grid: [Float] = (0..<(4 * 4 * 2)).map { Float($0 % 7) }
        var same = [Float](repeating: 0, count: grid.count)
        bicubicResize(grid, inHeight: 4, inWidth: 4, into: &same, outHeight: 4, outWidth: 4, channels: 2)
        XCTAssertEqual(same, grid, "resizing to the same size is the identity (t = 0 puts all weight on one tap)")
        let constant = [Float](repeating: 2.5, count: 3 * 3)
        var larger = [Float](repeating: 0, count: 7 * 5)
        bicubicResize(constant, inHeight: 3, inWidth: 3, into: &larger, outHeight: 7, outWidth: 5, channels: 1)
        for value in larger { XCTAssertEqual(value, 2.5, accuracy: 1e-5) } // the four weights sum to 1 up to rounding
    }
}

final class TensorTests: XCTestCase {
    func testCopyOnWrite() {
        let a = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])
        var b = a
        b.withUnsafeMutableBufferPointer { $0[0] = 9 }
        XCTAssertEqual(a.scalars, [1, 2, 3, 4])
        XCTAssertEqual(b.scalars, [9, 2, 3, 4])
    }

    func testBorrowedStorageIsCopiedBeforeWriting() {
        final class Owner {}
        let owner = Owner()
        var backing: [Float] = [1, 2, 3]
        backing.withUnsafeBufferPointer { buffer in
            var t = Tensor(shape: [3], storage: TensorStorage(borrowing: buffer.baseAddress!, count: 3, owner: owner))
            XCTAssertFalse(t.storage.isOwned)
            t.withUnsafeMutableBufferPointer { $0[1] = 7 }
            XCTAssertTrue(t.storage.isOwned)
            XCTAssertEqual(t.scalars, [1, 7, 3])
        }
        XCTAssertEqual(backing, [1, 2, 3])
        backing[0] = 0
    }

    func testSeededGeneratorIsReproducibleAndNormal() {
        var a = SeededGenerator(seed: 42), b = SeededGenerator(seed: 42)
        let xs = (0..<20_000).map { _ in a.normal() }
        XCTAssertEqual(xs.prefix(5).map { $0 }, (0..<5).map { _ in b.normal() })
        let mean = xs.reduce(0, +) / Float(xs.count)
        let std = (xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(xs.count)).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(std, 1, accuracy: 0.03)
    }
}

/// Each backward kernel against central differences of its forward, on its own: loss = Σ output ⊙ upstream.
final class BackwardKernelTests: XCTestCase {
    func random(_ count: Int, seed: UInt64) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in generator.normal() }
    }

    /// d(Σ f(x) ⊙ upstream)/dx by central differences, x perturbed one element at a time.
    func numericGradient(_ x: [Float], upstream: [Float], step: Float = 1e-2, _ f: ([Float]) -> [Float]) -> [Double] {
        (0..<x.count).map { i in
            var (plus, minus) = (x, x)
            plus[i] += step
            minus[i] -= step
            let (up, down) = (f(plus), f(minus))
            return zip(zip(up, down), upstream).reduce(0.0) { $0 + (Double($1.0.0) - Double($1.0.1)) * Double($1.1) } / (2 * Double(step))
        }
    }

    func assertClose(_ analytic: [Float], _ numeric: [Double], _ what: String) {
        let scale = numeric.map(abs).max()!
        for (a, n) in zip(analytic, numeric) { XCTAssertEqual(Double(a), n, accuracy: 3e-3 * max(scale, 1), what) }
    }

    func testLayerNormBackward() {
        let (rows, dim) = (3, 7)
        let x = random(rows * dim, seed: 1), gamma = random(dim, seed: 2), beta = random(dim, seed: 3), upstream = random(rows * dim, seed: 4)
        func forward(_ x: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: rows * dim)
            layerNorm(x: x, gamma: gamma, beta: beta, y: &y, rows: rows, dim: dim, eps: 1e-6)
            return y
        }
        var (dx, dGamma, dBeta) = ([Float](repeating: 0, count: rows * dim), [Float](repeating: 0, count: dim), [Float](repeating: 0, count: dim))
        layerNormBackward(x: x, gamma: gamma, dy: upstream, dx: &dx, dGamma: &dGamma, dBeta: &dBeta, rows: rows, dim: dim, eps: 1e-6, accumulate: false)
        assertClose(dx, numericGradient(x, upstream: upstream, forward), "dx")
        let numericGamma = (0..<dim).map { j in (0..<rows).reduce(0.0) { total, r in
            let row = x[(r * dim)..<((r + 1) * dim)].map(Double.init)
            let mean = row.reduce(0, +) / Double(dim), variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(dim)
            return total + (row[j] - mean) / (variance + 1e-6).squareRoot() * Double(upstream[r * dim + j])
        } }
        assertClose(dGamma, numericGamma, "dGamma")
        assertClose(dBeta, (0..<dim).map { j in (0..<rows).reduce(0.0) { $0 + Double(upstream[$1 * dim + j]) } }, "dBeta")
    }

    func testSoftmaxBackward() {
        let (rows, cols) = (2, 9)
        let x = random(rows * cols, seed: 5), upstream = random(rows * cols, seed: 6)
        func forward(_ x: [Float]) -> [Float] {
            var y = x
            softmaxRows(&y, rows: rows, cols: cols)
            return y
        }
        var gradient = upstream
        softmaxBackwardRows(probabilities: forward(x), gradient: &gradient, rows: rows, cols: cols)
        assertClose(gradient, numericGradient(x, upstream: upstream, step: 1e-3, forward), "softmax")
    }

    func testAttentionBackward() {
        let (batch, sequence, heads, headDim) = (2, 5, 2, 3)
        let width = heads * headDim, count = batch * sequence * width
        let q = random(count, seed: 7), k = random(count, seed: 8), v = random(count, seed: 9), upstream = random(count, seed: 10)
        let scale = 1 / Float(headDim).squareRoot()
        var scratch = [Float](repeating: 0, count: max(sequence * sequence, attentionScratchCount(sequence: sequence, headDim: headDim, threads: 1)))
        func forward(_ q: [Float], _ k: [Float], _ v: [Float], probabilities: UnsafeMutablePointer<Float>? = nil) -> [Float] {
            var context = [Float](repeating: 0, count: count)
            multiHeadAttention(query: q, key: k, value: v, context: &context, batch: batch, sequence: sequence, heads: heads, headDim: headDim,
                               scale: scale, headMask: nil, probabilities: probabilities, scratch: &scratch)
            return context
        }
        var probabilities = [Float](repeating: 0, count: batch * heads * sequence * sequence)
        _ = forward(q, k, v, probabilities: &probabilities)
        var (dq, dk, dv) = ([Float](repeating: 0, count: count), [Float](repeating: 0, count: count), [Float](repeating: 0, count: count))
        var backwardScratch = [Float](repeating: 0, count: sequence * sequence)
        multiHeadAttentionBackward(query: q, key: k, value: v, probabilities: probabilities, dropped: nil, dropMultipliers: nil,
                                   contextGradient: upstream, queryGradient: &dq, keyGradient: &dk, valueGradient: &dv,
                                   batch: batch, sequence: sequence, heads: heads, headDim: headDim, scale: scale, scratch: &backwardScratch)
        assertClose(dq, numericGradient(q, upstream: upstream) { forward($0, k, v) }, "dQ")
        assertClose(dk, numericGradient(k, upstream: upstream) { forward(q, $0, v) }, "dK")
        assertClose(dv, numericGradient(v, upstream: upstream) { forward(q, k, $0) }, "dV")
    }
}

final class TensorShapeTests: XCTestCase {
    func testReshapeRowsAndConcatenation() {
        let a = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6]), b = Tensor(shape: [1, 3], scalars: [7, 8, 9])
        XCTAssertEqual(a.reshaped([3, 2]).shape, [3, 2])
        XCTAssertEqual(a.reshaped([6]).scalars, a.scalars)
        XCTAssertEqual(a.rows(1..<2).scalars, [4, 5, 6])
        XCTAssertEqual(a.rows(1..<2).shape, [1, 3])
        let joined = Tensor.concatenated([a, b])
        XCTAssertEqual(joined.shape, [3, 3])
        XCTAssertEqual(joined.scalars, [1, 2, 3, 4, 5, 6, 7, 8, 9])
        XCTAssertEqual(Tensor.concatenated([joined]).rows(0..<0).shape, [0, 3])
        var copy = a.reshaped([3, 2])
        copy.withUnsafeMutableBufferPointer { $0[0] = 100 }
        XCTAssertEqual(a.scalars[0], 1, "a reshaped tensor is copied on write")
    }
}
