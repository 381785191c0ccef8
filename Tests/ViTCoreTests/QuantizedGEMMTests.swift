import CKernels
import Foundation
import XCTest
@testable import ViTCore

final class QuantizedGEMMTests: XCTestCase {
    func randomMatrix(_ count: Int, seed: UInt64, std: Float = 1) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in generator.normal(std: std) }
    }

    func testWeightQuantisationRoundTrips() {
        for bits in [8, 7] { checkWeightQuantisationRoundTrips(bits: bits) }
    }

    func checkWeightQuantisationRoundTrips(bits: Int) {
        let (n, k) = (37, 23)
        let levels = bits == 8 ? 127 : 63
        var weight = randomMatrix(n * k, seed: 1)
        weight[5 * k + 3] = 9  // an outlier only widens its own channel's scale
        let matrix = weight.withUnsafeBufferPointer { QuantizedMatrix(quantizing: $0.baseAddress!, n: n, k: k, bits: bits) }
        XCTAssertEqual(matrix.bits, bits)
        let values = matrix.values
        XCTAssertTrue(values.allSatisfy { (-levels...levels).contains(Int($0)) })
        for o in 0..<n {
            let row = weight[(o * k)..<((o + 1) * k)]
            let largest = row.map(abs).max()!
            if bits == 8 {
                XCTAssertEqual(matrix.scales[o], largest / Float(levels), accuracy: 1e-7)
                XCTAssertEqual(values[(o * k)..<((o + 1) * k)].map { abs(Int($0)) }.max(), levels, "each channel uses its full range")
            } else {  // fitted to AVX2's lanes at 48 to 63 levels
                let channelLevels = largest / matrix.scales[o]
                XCTAssertEqual(channelLevels, channelLevels.rounded(), accuracy: 1e-4)
                XCTAssertTrue((48...63).contains(Int(channelLevels.rounded())), "channel \(o) at \(channelLevels) levels")
            }
            for i in 0..<k {
                let level = weight[o * k + i] / matrix.scales[o], value = Float(values[o * k + i])
                if bits == 8 { XCTAssertEqual(value, level, accuracy: 0.5001) }
                else { XCTAssertTrue(abs(value - level) <= 0.5001 || (abs(value) < abs(level) && value * level >= 0), "only lowered towards 0") }
            }
        }
        if bits == 7 {
            XCTAssertTrue(matrix.tripleLaneSum <= 128 || matrix.pairLaneSum <= 128, "every lane fits, of three groups or else two")
            let plainScales = (0..<n).map { o in weight[(o * k)..<((o + 1) * k)].map(abs).max()! / 63 }
            let error = { (scale: (Int) -> Float, value: (Int) -> Float) in
                (0..<(n * k)).reduce(0.0) { sum, i in let e = Double(scale(i / k) * value(i) - weight[i]); return sum + e * e } }
            let fitted = error({ matrix.scales[$0] }, { Float(values[$0]) })
            let rounded = error({ plainScales[$0] }, { (weight[$0] / plainScales[$0 / k]).rounded(.toNearestOrEven) })
            XCTAssertLessThanOrEqual(fitted, 1.2 * 1.2 * rounded, "fitting costs at most 20 % of the rms rounding error")
        }
        let again = QuantizedMatrix(values: values, stride: k, scales: matrix.scales, n: n, k: k)
        XCTAssertEqual(again.values, values, "stored int8 weights load without re-quantising")
        XCTAssertEqual([again.pairLaneSum, again.tripleLaneSum], [matrix.pairLaneSum, matrix.tripleLaneSum])
    }

    /// Within each block of 4·groups values of a row, those at k ≡ 0, 1 (mod 4) share a lane, and those at k ≡ 2,
    /// 3 the other; a lane's sum is the larger same-sign |sum|.
    func testLaneSumsGroupTheValuesAVX2AddInInt16() {
        var values = [Int8](repeating: 0, count: 2 * 16)
        values[0] = 60; values[1] = 50; values[4] = -70; values[5] = 40  // lane {0, 1, 4, 5}: 150 positive, 70 negative
        values[2] = 63; values[3] = 63; values[6] = 63  // lane {2, 3, 6, 7}: 189
        values[16 + 8] = -63; values[16 + 9] = -63; values[16 + 12] = -63; values[16 + 13] = -63  // row 1: one 8-block, two 12-blocks
        XCTAssertEqual(vitmsn_qgemm_lane_sum(values, 16, 16, 1, 2), 189)
        XCTAssertEqual(vitmsn_qgemm_lane_sum(values, 16, 16, 2, 2), 252)
        XCTAssertEqual(vitmsn_qgemm_lane_sum(values, 16, 6, 1, 2), 150, "values past k are not read")
        XCTAssertEqual(vitmsn_qgemm_lane_sum(values, 16, 16, 1, 1), 126, "one group: {2, 3}")
        XCTAssertEqual(vitmsn_qgemm_lane_sum(Array(values[16...]), 16, 16, 1, 3), 126, "{8, 9} and {12, 13} are in different 12-blocks")
        values[8] = 40  // lane {0, 1, 4, 5, 8, 9}: 190
        XCTAssertEqual(vitmsn_qgemm_lane_sum(values, 16, 16, 2, 3), 190)
        XCTAssertEqual(vitmsn_qgemm_lane_sum(values, 16, 16, 1, 4), -1)
    }

    /// 8 bits with a zero point, except where AVX2's int16 pairs need 7 (against 8-bit weights); AVX2
    /// refuses a product whose pairs could saturate, the portable kernel takes it.
    func testActivationQuantisationUsesTheKernelsRangeWithAZeroPoint() {
        let avx2 = String(cString: vitmsn_qgemm_isa()) == "avx2"
        XCTAssertEqual(vitmsn_qgemm_activation_levels(63), 255)
        XCTAssertEqual(vitmsn_qgemm_activation_levels(127), avx2 ? 127 : 255)
        // 150 columns: the vector kernels' four min/max chains, a lone vector and a scalar tail
        let (rows, cols, stride) = (3, 150, 152)
        var x = randomMatrix(rows * cols, seed: 2)
        for j in 0..<cols { x[2 * cols + j] = 0.5 + Float(j) / 16 } // an all-positive row still represents 0 exactly
        x[cols + 131] = 9  // row 1's maximum and minimum sit in the later chains, and a NaN is passed over
        x[cols + 70] = -7
        x[cols + 5] = .nan
        for levels: Int32 in [255, 127] {
            var q = [UInt8](repeating: 255, count: rows * stride), scales = [Float](repeating: 0, count: rows), zeros = [Int32](repeating: 0, count: rows)
            vitmsn_quantize_activations(x, cols, rows, cols, &q, stride, &scales, &zeros, levels)
            for r in 0..<rows {
                let row = q[(r * stride)..<(r * stride + cols)]
                XCTAssertTrue(row.allSatisfy { Int32($0) <= levels })
                XCTAssertTrue(row.contains { Int32($0) == levels }, "the row maximum takes the top level")
                XCTAssertEqual(Array(q[(r * stride + cols)..<(r * stride + stride)]), [0, 0], "padding is zero")
                for j in 0..<cols where !x[r * cols + j].isNaN {
                    XCTAssertEqual(scales[r] * Float(Int32(q[r * stride + j]) - zeros[r]), x[r * cols + j], accuracy: scales[r] / 2 * 1.001)
                }
            }
            XCTAssertEqual(scales[1], 16 / Float(levels), accuracy: 1e-6, "row 1 spans [-7, 9]")
            XCTAssertEqual(q[stride + 5], 0, "a NaN becomes level 0")
            XCTAssertEqual(zeros[2], 0)
        }
        let weight = randomMatrix(16 * 8, seed: 3).withUnsafeBufferPointer { QuantizedMatrix(quantizing: $0.baseAddress!, n: 16, k: 8, bits: 8) }
        let (a, scale, zero) = ([UInt8](repeating: 255, count: 8), [Float(1)], [Int32(0)])
        var c = [Float](repeating: 0, count: 16)
        a.withUnsafeBufferPointer { a in scale.withUnsafeBufferPointer { scale in zero.withUnsafeBufferPointer { zero in
            weight.scales.withUnsafeBufferPointer { bs in weight.columnSums.withUnsafeBufferPointer { sums in c.withUnsafeMutableBufferPointer { c in
                var call = vitmsn_qgemm_call(
                    m: 1, n: 16, k: 8, a: a.baseAddress!, lda: 8, a_scale: scale.baseAddress!, a_zero: zero.baseAddress!, a_max: 255, packed_b: weight.data,
                    b_scale: bs.baseAddress!, b_sum: sums.baseAddress!, b_max: weight.largestMagnitude, b_pair_lane_sum: weight.pairLaneSum, b_triple_lane_sum: weight.tripleLaneSum, c: c.baseAddress!, ldc: 16,
                    epilogue: vitmsn_epilogue(alpha: 1, beta: 0, bias: nil, activation: -1), m0: 0, m1: 1, n0: 0, n1: 16)
                XCTAssertEqual(vitmsn_qgemm(&call), avx2 ? -1 : 0)
                XCTAssertEqual(vitmsn_qgemm_portable(&call), 0)
            } } }
        } } }
        XCTAssertEqual(zip(c, weight.values.indices.filter { $0 % 8 == 0 }).map { c, first in
            c - 255 * weight.scales[first / 8] * Float(weight.values[first..<(first + 8)].reduce(0) { $0 + Int($1) }) }.map(abs).max()!, 0, accuracy: 1e-3)
    }

    /// Runs one int8 product (m × k times the n × k weight, transposed) through `kernel`, with `parts` threads.
    func product(
        x: [Float], weight: QuantizedMatrix, m: Int, bias: [Float]?, beta: Float = 0, start: [Float]? = nil, activation: Int32 = -1,
        parts: Int = 1, kernel: (UnsafePointer<vitmsn_qgemm_call>) -> Int32 = { vitmsn_qgemm($0) }
    ) -> [Float] {
        let (k, n) = (weight.k, weight.n)
        let stride = vitmsn_qgemm_row_stride(k)
        let levels = vitmsn_qgemm_activation_levels(weight.largestMagnitude)
        var q = [UInt8](repeating: 0, count: m * stride), scales = [Float](repeating: 0, count: m), zeros = [Int32](repeating: 0, count: m)
        vitmsn_quantize_activations(x, k, m, k, &q, stride, &scales, &zeros, levels)
        var c = start ?? [Float](repeating: 0, count: m * n)
        let bias = bias ?? []
        q.withUnsafeBufferPointer { q in scales.withUnsafeBufferPointer { scales in zeros.withUnsafeBufferPointer { zeros in
            bias.withUnsafeBufferPointer { bias in weight.scales.withUnsafeBufferPointer { bs in
            weight.columnSums.withUnsafeBufferPointer { sums in c.withUnsafeMutableBufferPointer { c in
                let call = vitmsn_qgemm_call(
                    m: m, n: n, k: k, a: q.baseAddress!, lda: stride, a_scale: scales.baseAddress!, a_zero: zeros.baseAddress!, a_max: levels, packed_b: weight.data,
                    b_scale: bs.baseAddress!, b_sum: sums.baseAddress!, b_max: weight.largestMagnitude, b_pair_lane_sum: weight.pairLaneSum, b_triple_lane_sum: weight.tripleLaneSum, c: c.baseAddress!, ldc: n,
                    epilogue: vitmsn_epilogue(alpha: 1, beta: beta, bias: bias.isEmpty ? nil : bias.baseAddress, activation: activation),
                    m0: 0, m1: m, n0: 0, n1: n)
                let count = vitmsn_qgemm_parts([call], parts)
                for part in 0..<count {
                    var piece = vitmsn_qgemm_part([call], part, count)
                    XCTAssertEqual(kernel(&piece), 0)
                }
            } }
        } } } } }
        return c
    }

    /// Row counts whose last VNNI tile (12 rows) runs at full height (7) and at half height with 1, 6
    /// (18 = 12 + 6) or 2 rows (50 = 24 + 24 + 2).
    func testInt8ProductMatchesADequantisedReference() {
        for (m, n, k) in [(1, 16, 4), (7, 33, 23), (18, 40, 64), (50, 70, 385)] { for bits in [8, 7] {
            let x = randomMatrix(m * k, seed: 3), w = randomMatrix(n * k, seed: 4, std: 0.05), bias = randomMatrix(n, seed: 5)
            let weight = w.withUnsafeBufferPointer { QuantizedMatrix(quantizing: $0.baseAddress!, n: n, k: k, bits: bits) }
            let y = product(x: x, weight: weight, m: m, bias: bias)
            checkAgainstDequantisedReference(y, x: x, weight: weight, m: m, bias: bias, columns: 0..<n, context: "\(m)×\(n)×\(k) \(bits) bits")
        } }
    }

    /// y's `columns` against the same quantised values, dequantised and multiplied in Double.
    func checkAgainstDequantisedReference(_ y: [Float], x: [Float], weight: QuantizedMatrix, m: Int, bias: [Float], columns: some Sequence<Int>, context: String) {
        let (n, k, stride) = (weight.n, weight.k, vitmsn_qgemm_row_stride(weight.k))
        var q = [UInt8](repeating: 0, count: m * stride), scales = [Float](repeating: 0, count: m), zeros = [Int32](repeating: 0, count: m)
        vitmsn_quantize_activations(x, k, m, k, &q, stride, &scales, &zeros, vitmsn_qgemm_activation_levels(weight.largestMagnitude))
        let values = weight.values, weightScales = weight.scales
        for o in columns {
            for r in 0..<m {
                var sum = 0.0
                for i in 0..<k {
                    sum += Double(scales[r]) * Double(Int32(q[r * stride + i]) - zeros[r]) * Double(weightScales[o]) * Double(values[o * k + i])
                }
                XCTAssertEqual(Double(y[r * n + o]), sum + Double(bias[o]), accuracy: 1e-5 * (1 + abs(sum)), "\(context) [\(r), \(o)]")
            }
        }
    }

    /// K = 3072 puts only a few panels in each of the kernel's L2 blocks of B (QGEMM_BLOCK_BYTES), and 30 rows
    /// make two row blocks: every block of panels must meet every row block, with each tile, and no column twice
    /// (the residual add would show it).
    func testInt8ProductCoversEveryBlockOfPanels() {
        let chosen = String(cString: vitmsn_qgemm_tile())
        defer { vitmsn_qgemm_select_tile(chosen) }
        let (m, n, k) = (30, 200, 3072)
        let x = randomMatrix(m * k, seed: 15), w = randomMatrix(n * k, seed: 16, std: 0.05), bias = randomMatrix(n, seed: 17)
        let weight = w.withUnsafeBufferPointer { QuantizedMatrix(quantizing: $0.baseAddress!, n: n, k: k) }
        let zero = [Float](repeating: 0, count: m * n)
        let portable = product(x: x, weight: weight, m: m, bias: bias, beta: 1, start: zero) { vitmsn_qgemm_portable($0) }
        // every column at the edge of a 16-column panel, where the blocks of 6 or 8 panels begin and end
        checkAgainstDequantisedReference(portable, x: x, weight: weight, m: m, bias: bias,
                                         columns: stride(from: 0, to: n, by: 16).flatMap { [$0, min($0 + 15, n - 1)] }, context: "portable")
        for tile in ["12x32", "8x48", "4x16"] where vitmsn_qgemm_select_tile(tile) == 0 {
            XCTAssertEqual(product(x: x, weight: weight, m: m, bias: bias, beta: 1, start: zero), portable, "tile \(tile)")
        }
    }

    /// With 8- and 7-bit weights (AVX2's loops over three, two and single groups), K leaving one group after
    /// the threes (131) and two (125), widths that end on a whole tile, a part of one and a part of a panel,
    /// and rows that end on a full tile and a half-height one; on VNNI, with each of its tiles.
    func testDispatchedKernelEqualsThePortableOneBitForBit() {
        let chosen = String(cString: vitmsn_qgemm_tile())
        defer { vitmsn_qgemm_select_tile(chosen) }
        let shapes: [String] = ["12x32", "8x48", "4x16"]
        let tiles = shapes.filter { vitmsn_qgemm_select_tile($0) == 0 }
        XCTAssertTrue(tiles.contains(chosen), "the chosen tile \(chosen) among those run: \(tiles)")
        for tile in tiles {
            vitmsn_qgemm_select_tile(tile)
            for (n, bits) in [(50, 8), (50, 7), (64, 8), (80, 8), (13, 7)] { for k in [131, 125] { for m in [45, 28] {
                checkDispatchedAgainstPortable(n: n, k: k, m: m, bits: bits, tile: tile)
            } } }
        }
    }

    func checkDispatchedAgainstPortable(n: Int, k: Int, m: Int, bits: Int, tile: String) {
        let context = "\(m)×\(n)×\(k), \(bits)-bit weights, tile \(tile)"
        let x = randomMatrix(m * k, seed: 6), bias = randomMatrix(n, seed: 8)
        var w = randomMatrix(n * k, seed: 7, std: 0.1)
        for o in 0..<n { w[o * k + o % k] = 0.5 }  // an outlier per channel, as trained weights have: Gaussian rows at small K fit only two groups
        let start = randomMatrix(m * n, seed: 9)
        let fitted = w.withUnsafeBufferPointer { QuantizedMatrix(quantizing: $0.baseAddress!, n: n, k: k, bits: bits) }
        guard bits == 7 else { return checkDispatchedAgainstPortable(x: x, weight: fitted, m: m, bias: bias, start: start, context: context) }
        XCTAssertLessThanOrEqual(fitted.tripleLaneSum, 128, "7-bit weights run AVX2's three-group sums")
        // Small values with one three-group lane over 128, as a checkpoint fitted to two-group lanes may hold: pairs.
        var generator = SeededGenerator(seed: 10)
        var small = (0..<(n * k)).map { _ in Int8(generator.next() % 41) - 20 }
        for i in [0, 1, 8, 9] { small[i] = 40 }
        let pairsOnly = QuantizedMatrix(values: small, stride: k, scales: fitted.scales, n: n, k: k)
        XCTAssertGreaterThan(pairsOnly.tripleLaneSum, 128)
        XCTAssertLessThanOrEqual(pairsOnly.pairLaneSum, 128)
        // The fitted values with one two-group lane over 128, as a 7-bit checkpoint from before any fitting may hold: single groups.
        var values = fitted.values
        for i in [0, 1, 4, 5] { values[i] = 63 }
        let unfitted = QuantizedMatrix(values: values, stride: k, scales: fitted.scales, n: n, k: k)
        for weight in [fitted, pairsOnly, unfitted] { checkDispatchedAgainstPortable(x: x, weight: weight, m: m, bias: bias, start: start, context: context) }
    }

    func checkDispatchedAgainstPortable(x: [Float], weight: QuantizedMatrix, m: Int, bias: [Float], start: [Float], context: String) {
        let portable = { (call: UnsafePointer<vitmsn_qgemm_call>) in vitmsn_qgemm_portable(call) }
        XCTAssertEqual(product(x: x, weight: weight, m: m, bias: bias), product(x: x, weight: weight, m: m, bias: bias, kernel: portable), context)
        XCTAssertEqual(product(x: x, weight: weight, m: m, bias: nil, beta: 1, start: start),
                       product(x: x, weight: weight, m: m, bias: nil, beta: 1, start: start, kernel: portable), "\(context): residual add")
        // The GELU epilogue calls each build's own erf, whose contraction may differ in the last bit.
        let gelu = product(x: x, weight: weight, m: m, bias: bias, activation: Int32(VITMSN_GELU.rawValue))
        let geluPortable = product(x: x, weight: weight, m: m, bias: bias, activation: Int32(VITMSN_GELU.rawValue), kernel: portable)
        XCTAssertLessThan(zip(gelu, geluPortable).map { abs($0 - $1) }.max()!, 1e-5, "\(context): GELU")
    }

    /// Lanes at the limit (same-sign sums of 128) against activations at 255: the int16 sums are 255 · 128, over
    /// two groups (K = 8) and three (K = 12).
    func testInt16LanesHoldTheirLargestSums() {
        for k in [8, 12] {
            var values = [Int8](repeating: 0, count: 16 * k)
            for o in 0..<16 {
                (values[o * k], values[o * k + 1], values[o * k + k - 4]) = (63, 63, 2)
                (values[o * k + 2], values[o * k + 3], values[o * k + k - 1]) = (-63, -63 + Int8(o % 2), -2)
            }
            let weight = QuantizedMatrix(values: values, stride: k, scales: [Float](repeating: 0.01, count: 16), n: 16, k: k)
            XCTAssertEqual(weight.tripleLaneSum, 128)
            let x = [Float](repeating: 1, count: 5 * k)  // quantised to 255 with a zero point of 0
            let portable = product(x: x, weight: weight, m: 5, bias: nil) { vitmsn_qgemm_portable($0) }
            XCTAssertEqual(product(x: x, weight: weight, m: 5, bias: nil), portable, "K \(k)")
            XCTAssertEqual(portable[0], 0.01 * Float(128 - 128), accuracy: 1e-6)
            XCTAssertEqual(portable[1], 0.01 * Float(128 - 127), accuracy: 1e-6)
        }
    }

    func testInt8ProductIsBitIdenticalAcrossThreadSplits() {
        for (m, n, k) in [(400, 64, 96), (4, 2800, 192)] { // split by rows, then by panels
            let x = randomMatrix(m * k, seed: 10), w = randomMatrix(n * k, seed: 11, std: 0.1)
            let weight = w.withUnsafeBufferPointer { QuantizedMatrix(quantizing: $0.baseAddress!, n: n, k: k) }
            let call = vitmsn_qgemm_call(m: m, n: n, k: k, a: nil, lda: vitmsn_qgemm_row_stride(k), a_scale: nil, a_zero: nil, a_max: 255, packed_b: nil, b_scale: nil, b_sum: nil, b_max: 0, b_pair_lane_sum: 0, b_triple_lane_sum: 0,
                                         c: nil, ldc: n, epilogue: vitmsn_epilogue(), m0: 0, m1: m, n0: 0, n1: n)
            XCTAssertEqual(vitmsn_qgemm_parts([call], 3), 3, "\(m)×\(n) is split")
            XCTAssertEqual(product(x: x, weight: weight, m: m, bias: nil), product(x: x, weight: weight, m: m, bias: nil, parts: 3))
        }
    }

    func testQuantizedLinearForwardFusesTheEpilogue() {
        let (rows, k, n) = (9, 40, 20)
        let x = randomMatrix(rows * k, seed: 12), w = randomMatrix(n * k, seed: 13, std: 0.2), bias = randomMatrix(n, seed: 14)
        let weight = w.withUnsafeBufferPointer { QuantizedMatrix(quantizing: $0.baseAddress!, n: n, k: k) }
        let direct = product(x: x, weight: weight, m: rows, bias: bias)
        var y = [Float](repeating: 1, count: rows * n)
        x.withUnsafeBufferPointer { x in bias.withUnsafeBufferPointer { b in
            let rows = QuantizedRows(x.baseAddress!, rows: rows, columns: k, for: [weight], parallelism: Parallelism(threads: 2))
            y.withUnsafeMutableBufferPointer { y in
                quantizedLinearForward(x: rows, products: [QuantizedProduct(weight: weight, bias: b.baseAddress, y: y.baseAddress!, accumulate: true)],
                                       parallelism: Parallelism(threads: 2))
            }
        } }
        XCTAssertEqual(y, direct.map { 1 + $0 })
    }

    /// Query, key and value go in one parallel region: split between threads, each product gives the bits
    /// it gives alone on one thread, whichever way it splits (by panels, by rows, or not at all).
    func testProductsSharingARegionMatchSeparateCalls() {
        let (rows, k) = (64, 768), widths = [256, 48, 16]
        let x = randomMatrix(rows * k, seed: 15), bias = randomMatrix(256, seed: 19)
        let weights = widths.enumerated().map { i, n in
            randomMatrix(n * k, seed: 16 + UInt64(i), std: 0.2).withUnsafeBufferPointer { QuantizedMatrix(quantizing: $0.baseAddress!, n: n, k: k) }
        }
        XCTAssertEqual(weights.map { w in
            var call = vitmsn_qgemm_call()
            (call.m, call.n, call.k, call.m1, call.n1) = (rows, w.n, k, rows, w.n)
            return vitmsn_qgemm_parts(&call, 2)
        }, [2, 2, 1])
        func run(threads: Int, together: Bool) -> [[Float]] {
            let outputs = widths.map { n in UnsafeMutableBufferPointer<Float>.allocate(capacity: rows * n) }
            defer { outputs.forEach { $0.deallocate() } }
            x.withUnsafeBufferPointer { x in bias.withUnsafeBufferPointer { b in
                let quantized = QuantizedRows(x.baseAddress!, rows: rows, columns: k, for: weights)
                let products = zip(weights, outputs).enumerated().map { i, pair in
                    _ = pair.1.initialize(from: repeatElement(Float(0.5), count: pair.1.count))
                    return QuantizedProduct(weight: pair.0, bias: b.baseAddress, y: pair.1.baseAddress!, accumulate: i == 1, activation: i == 2 ? .gelu : nil)
                }
                if together {
                    quantizedLinearForward(x: quantized, products: products, parallelism: Parallelism(threads: threads))
                } else {
                    for product in products { quantizedLinearForward(x: quantized, products: [product], parallelism: Parallelism(threads: threads)) }
                }
            } }
            return outputs.map { Array($0) }
        }
        let alone = run(threads: 1, together: false), together = run(threads: 2, together: true)
        for (i, (a, b)) in zip(alone, together).enumerated() {
            XCTAssertEqual(a, b, "product \(i)")
            XCTAssertFalse(a.contains(0.5), "product \(i) left outputs unwritten")
        }
    }

    /// One head of the int8 attention's scheme in Double, from the same quantised values: Q per row unsigned
    /// with a zero point, K per key and V per channel symmetric at the weight levels of this CPU's kernel, the
    /// probabilities as levels round(255 · exp(s − max)) over their sum. Returns the (S, hd) context.
    func int8AttentionReference(q: [Float], k: [Float], v: [Float], ld: Int, offset: Int, sequence: Int, headDim: Int, scale: Float, mask: Float) -> [Double] {
        let levels: Float = QuantizedMatrix.preferredBits == 7 ? 63 : 127
        func symmetric(_ x: [Float]) -> (values: [Float], scale: Float) {
            let largest = x.map(abs).max()!, inverse = largest > 0 ? levels / largest : 0
            return (x.map { min(max(($0 * inverse).rounded(.toNearestOrEven), -levels), levels) }, largest / levels)
        }
        let rows = (0..<sequence).map { j in (0..<headDim).map { offset + j * ld + $0 } }
        let keys = rows.map { symmetric($0.map { k[$0] }) }
        let channels = (0..<headDim).map { d in symmetric((0..<sequence).map { v[offset + $0 * ld + d] }) }
        var context = [Double](repeating: 0, count: sequence * headDim)
        for i in 0..<sequence {
            let x = rows[i].map { q[$0] }
            let (low, high) = (min(x.min()!, 0), max(x.max()!, 0))
            let inverse = high > low ? 255 / (high - low) : 0, zero = (-low * inverse).rounded(.toNearestOrEven)
            let quantized = x.map { min(max(($0 * inverse).rounded(.toNearestOrEven) + zero, 0), 255) - zero }
            let scores = keys.map { key in
                Double(scale) * Double((high - low) / 255) * Double(key.scale) * zip(quantized, key.values).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            let levelsOfP = scores.map { (Foundation.exp($0 - scores.max()!) * 255).rounded(.toNearestOrEven) }, total = levelsOfP.reduce(0, +)
            for d in 0..<headDim {
                let sum = (0..<sequence).reduce(0.0) { $0 + levelsOfP[$1] * Double(channels[d].values[$1]) }
                context[i * headDim + d] = Double(mask) * Double(channels[d].scale) * sum / total
            }
        }
        return context
    }

    /// The int8 attention kernel computes its scheme (the Double reference above, to float rounding), stays near
    /// float attention, and gives the same bits on any thread split; over ragged query blocks, heads that are not
    /// whole vectors and a head mask.
    func testInt8AttentionMatchesItsSchemeAndStaysNearFloat() {
        for (sequence, headDim) in [(1, 8), (5, 3), (30, 20), (61, 40), (197, 64)] {
            let (batch, heads) = (2, 2), width = heads * headDim, count = batch * sequence * width
            let q = randomMatrix(count, seed: 31, std: 2), k = randomMatrix(count, seed: 32, std: 2), v = randomMatrix(count, seed: 33)
            let scale = 1 / Float(headDim).squareRoot(), mask: [Float] = [1, 0.5]
            func attention(int8: Bool, threads: Int) -> [Float] {
                var scratch = [Float](repeating: .nan, count: attentionScratchCount(sequence: sequence, headDim: headDim, threads: threads))
                var context = [Float](repeating: .nan, count: count)
                multiHeadAttention(query: q, key: k, value: v, context: &context, batch: batch, sequence: sequence, heads: heads, headDim: headDim,
                                   scale: scale, headMask: mask, probabilities: nil, scratch: &scratch, int8: int8, parallelism: Parallelism(threads: threads))
                return context
            }
            let int8 = attention(int8: true, threads: 2), float = attention(int8: false, threads: 2)
            XCTAssertEqual(int8, attention(int8: true, threads: 1), "S \(sequence), head size \(headDim): 1 against 2 threads")
            var (error, norm) = (0.0, 0.0)
            for b in 0..<batch { for h in 0..<heads {
                let offset = b * sequence * width + h * headDim
                let reference = int8AttentionReference(q: q, k: k, v: v, ld: width, offset: offset, sequence: sequence, headDim: headDim, scale: scale, mask: mask[h])
                for i in 0..<sequence { for d in 0..<headDim {
                    let index = offset + i * width + d
                    XCTAssertEqual(Double(int8[index]), reference[i * headDim + d], accuracy: 1e-5, "S \(sequence), head size \(headDim), [\(b), \(h), \(i), \(d)]")
                    error += pow(Double(int8[index] - float[index]), 2)
                    norm += pow(Double(float[index]), 2)
                } }
            } }
            // Measured: 2.3 % at S 197 with 8-bit K and V, 3.4 % with AVX2's 7 bits; sharp attention (scores of std 2).
            XCTAssertLessThan((error / norm).squareRoot(), 0.05, "S \(sequence), head size \(headDim): relative error against float attention")
            XCTAssertNotEqual(int8, float, "S \(sequence), head size \(headDim): the int8 kernel ran")
        }
    }
}
