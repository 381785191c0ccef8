import CKernels
import Foundation

/// A weight (out, in) in symmetric int8, one scale per output channel (`w ≈ scale[o] · q[o][i]`, q in
/// [-127, 127] at 8 bits or [-63, 63] at 7, which AVX2 runs faster: see CKernels' qgemm_body.h), packed for
/// the int8 GEMM. The layout is the same for every instruction set.
public final class QuantizedMatrix: @unchecked Sendable {
    /// The weight bits this CPU's int8 kernel runs fastest with at no loss: 7 on AVX2, 8 with VNNI or portably.
    public static var preferredBits: Int { Int(vitmsn_qgemm_preferred_weight_bits()) }
    /// Whether int8 models run attention's products (QKᵀ and PV) in int8 on this CPU: with VNNI, where that is
    /// faster than float attention; elsewhere they stay in float.
    public static var quantizesAttention: Bool { vitmsn_qgemm_attention_pays() != 0 }

    /// Input features (K) and output features (N).
    public let k: Int
    public let n: Int
    /// N scales (the dequantised weight is `scale[o] · q[o][i]`) and the N column sums Σ_i q[o][i] (for the
    /// activations' zero-point correction), where the kernel's epilogue reads them.
    let scaleStorage: UnsafeMutablePointer<Float>
    let columnSumStorage: UnsafeMutablePointer<Int32>
    /// The largest |q|: 127 at 8 bits, 63 at 7 (0 for a zero matrix).
    let largestMagnitude: Int32
    /// The largest same-sign sum of the values sharing an int16 lane when AVX2 adds two or three k-groups in
    /// int16 (`vitmsn_qgemm_lane_sum`): the three-group sum is at most 128 for weights this build quantised to 7
    /// bits, which AVX2 then runs with 4 multiplies per 96 products.
    let pairLaneSum, tripleLaneSum: Int32
    let data: UnsafeMutablePointer<Int8>

    /// The N scales: the dequantised weight is `scales[o] · q[o][i]`.
    public var scales: [Float] { Array(UnsafeBufferPointer(start: scaleStorage, count: n)) }
    /// Σ_i q[o][i] per output channel.
    var columnSums: [Int32] { Array(UnsafeBufferPointer(start: columnSumStorage, count: n)) }

    /// 8 or 7: the bits the values span (a matrix within [-63, 63] counts as 7).
    public var bits: Int { largestMagnitude > 63 ? 8 : 7 }

    /// Quantises an `nn.Linear` weight (n × k, row-major) to `bits` (8 or 7): per output channel, round to
    /// nearest even; at 7 bits, with AVX2's lanes fitted (a few weights a level nearer zero, see CKernels).
    public convenience init(quantizing weight: UnsafePointer<Float>, n: Int, k: Int, bits: Int = QuantizedMatrix.preferredBits) {
        precondition(bits == 7 || bits == 8, "int8 weights take 7 or 8 bits, not \(bits)")
        let stride = vitmsn_qgemm_row_stride(k)
        var values = [Int8](repeating: 0, count: n * stride)
        var scales = [Float](repeating: 0, count: n)
        values.withUnsafeMutableBufferPointer { q in vitmsn_quantize_rows(weight, k, n, k, q.baseAddress!, stride, &scales, Int32(bits)) }
        self.init(values: values, stride: stride, scales: scales, n: n, k: k)
    }

    /// int8 values in [-127, 127] (n × k, row `o` at `o · stride`) with their scales, e.g. as a quantised
    /// checkpoint stores them.
    public init(values: [Int8], stride: Int, scales: [Float], n: Int, k: Int) {
        precondition(scales.count == n && stride >= k && values.count >= n * stride - (stride - k) && !values.contains(-128),
                     "\(values.count) values, \(scales.count) scales and stride \(stride) for a \(n)×\(k) weight")
        (self.k, self.n) = (k, n)
        scaleStorage = .allocate(capacity: max(n, 1))
        scaleStorage.initialize(from: scales, count: n)
        columnSumStorage = .allocate(capacity: max(n, 1))
        for o in 0..<n { columnSumStorage[o] = values[(o * stride)..<(o * stride + k)].reduce(Int32(0)) { $0 + Int32($1) } }
        largestMagnitude = values.reduce(Int32(0)) { max($0, abs(Int32($1))) }
        pairLaneSum = vitmsn_qgemm_lane_sum(values, stride, k, n, 2)
        tripleLaneSum = vitmsn_qgemm_lane_sum(values, stride, k, n, 3)
        var memory: UnsafeMutableRawPointer?
        guard posix_memalign(&memory, 64, max(vitmsn_qgemm_packed_bytes(k, n), 64)) == 0, let memory else {
            fatalError("out of memory packing a \(n)×\(k) int8 matrix")
        }
        data = memory.assumingMemoryBound(to: Int8.self)
        vitmsn_qgemm_pack_b(values, stride, k, n, 0, (n + 15) / 16, data)
    }

    /// The int8 values (n × k, row-major), read back from the packed panels.
    public var values: [Int8] {
        let k4 = vitmsn_qgemm_row_stride(k) / 4
        var out = [Int8](repeating: 0, count: n * k)
        for o in 0..<n {
            let panel = data + (o / 16) * k4 * 64
            for i in 0..<k { out[o * k + i] = panel[i / 4 * 64 + (o % 16) * 4 + i % 4] }
        }
        return out
    }

    deinit {
        free(data)
        scaleStorage.deallocate()
        columnSumStorage.deallocate()
    }
}

/// Rows of activations quantised for the int8 GEMM: 8 bits (7 on AVX2) with a scale and zero point per row (per token),
/// made once and shared by every product that reads the same input (query, key and value).
package final class QuantizedRows {
    let rows, columns, stride: Int
    /// The largest value: 255, or 127 where the kernel takes only 7 bits against these weights.
    let levels: Int32
    let values: UnsafeMutablePointer<UInt8>
    let scales: UnsafeMutablePointer<Float>
    let zeroPoints: UnsafeMutablePointer<Int32>

    /// `x` (rows, columns) quantised for products with every one of `weights`.
    package init(_ x: UnsafePointer<Float>, rows: Int, columns: Int, for weights: [QuantizedMatrix], parallelism: Parallelism = .serial) {
        (self.rows, self.columns, stride) = (rows, columns, vitmsn_qgemm_row_stride(columns))
        levels = weights.map { vitmsn_qgemm_activation_levels($0.largestMagnitude) }.min() ?? 255
        values = .allocate(capacity: max(rows * stride, 1))
        scales = .allocate(capacity: max(rows, 1))
        zeroPoints = .allocate(capacity: max(rows, 1))
        let (q, s, z, stride, levels) = (UncheckedSendable(values), UncheckedSendable(scales), UncheckedSendable(zeroPoints), stride, levels)
        parallelism.forEachChunk(of: rows, minimumChunk: 16) { range in
            vitmsn_quantize_activations(x + range.lowerBound * columns, columns, range.count, columns,
                                        q.value + range.lowerBound * stride, stride, s.value + range.lowerBound, z.value + range.lowerBound, levels)
        }
    }

    deinit { values.deallocate(); scales.deallocate(); zeroPoints.deallocate() }
}

/// The parts each thread's share of an int8 product is cut in. On a shared host one thread is often slowed
/// while the other runs; with four parts a thread the other takes over the slowed one's remaining parts.
let partsPerThread = 4

/// One int8 product of `quantizedLinearForward`: `y = x · Wᵀ + bias` (or `y += …` when `accumulate`), then `activation`.
package struct QuantizedProduct {
    let weight: QuantizedMatrix
    let bias: UnsafePointer<Float>?
    let y: UnsafeMutablePointer<Float>
    let accumulate: Bool
    let activation: Activation?

    package init(weight: QuantizedMatrix, bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, accumulate: Bool = false, activation: Activation? = nil) {
        (self.weight, self.bias, self.y, self.accumulate, self.activation) = (weight, bias, y, accumulate, activation)
    }
}

/// `y[rows, out] = x · Wᵀ + bias` for each of `products` (W in int8, x quantised once), as dynamic
/// quantisation does it: the products are summed exactly in int32, and dequantisation, bias, activation
/// and residual add happen in the kernel's epilogue. The products share one parallel region (query, key and
/// value: one hand-off between threads instead of three), cut in `partsPerThread` parts a thread that the
/// threads take as they come free.
package func quantizedLinearForward(x: QuantizedRows, products: [QuantizedProduct], parallelism: Parallelism = .serial) {
    let calls = products.map { product -> vitmsn_qgemm_call in
        let weight = product.weight
        precondition(x.columns == weight.k, "\(x.columns) input features for a \(weight.n)×\(weight.k) weight")
        return vitmsn_qgemm_call(
            m: x.rows, n: weight.n, k: weight.k, a: x.values, lda: x.stride, a_scale: x.scales, a_zero: x.zeroPoints, a_max: x.levels,
            packed_b: weight.data, b_scale: weight.scaleStorage, b_sum: weight.columnSumStorage, b_max: weight.largestMagnitude,
            b_pair_lane_sum: weight.pairLaneSum, b_triple_lane_sum: weight.tripleLaneSum, c: product.y, ldc: weight.n,
            epilogue: vitmsn_epilogue(alpha: 1, beta: product.accumulate ? 1 : 0, bias: product.bias,
                                      activation: product.activation.map { Int32($0.kernel.rawValue) } ?? -1),
            m0: 0, m1: x.rows, n0: 0, n1: weight.n)
    }.filter { $0.m > 0 && $0.n > 0 }
    let wanted = parallelism.threads > 1 ? parallelism.threads * partsPerThread : 1
    let parts = calls.map { call in withUnsafePointer(to: call) { vitmsn_qgemm_parts($0, wanted) } }
    guard let tasks = parts.max() else { return }
    let shared = UncheckedSendable(calls)
    parallelism.forEachTask(count: tasks) { part in
        for (call, callParts) in zip(shared.value, parts) where part < callParts {
            var block = withUnsafePointer(to: call) { vitmsn_qgemm_part($0, part, callParts) }
            precondition(vitmsn_qgemm(&block) == 0, "int8 GEMM kernel refused its arguments")
        }
    }
    withExtendedLifetime(products) {}
}
