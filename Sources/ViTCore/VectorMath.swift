import CKernels

/// Sixteen floats at a time for the Swift kernels (LayerNorm, sums, adds). Reductions need explicit lanes:
/// LLVM will not reassociate a scalar float sum.
package typealias Vector16 = SIMD16<Float>

@inline(__always)
func load16(_ p: UnsafePointer<Float>) -> Vector16 {
    UnsafeRawPointer(p).loadUnaligned(as: Vector16.self)
}

@inline(__always)
func store16(_ v: Vector16, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector16.self)
}

/// Sum of `count` floats with sixteen independent accumulators.
@inline(__always)
package func sum(_ p: UnsafePointer<Float>, count: Int) -> Float {
    var acc = Vector16()
    var i = 0
    while i + 16 <= count {
        acc += load16(p + i)
        i += 16
    }
    var total = acc.sum()
    while i < count {
        total += p[i]
        i += 1
    }
    return total
}

/// The transcendental kernels (exp, erf and the activations and softmax built on them) are in the C target
/// CKernels, built twice and dispatched at run time: Swift SIMD code compiles for the baseline x86-64 (SSE2)
/// only, and its generic comparisons run lane by lane.
public enum VectorMath {
    /// "avx512", "avx2+fma" or "generic": the build of the kernels this CPU runs.
    public static var instructionSet: String { String(cString: vitmsn_kernel_isa()) }
    /// The int8 GEMM's, with its register tile (rows × columns): "avx512-vnni 8x48" (Intel) or "avx512-vnni
    /// 12x32", "avx2 4x16" or "generic 4x16".
    public static var int8Kernels: String { "\(String(cString: vitmsn_qgemm_isa())) \(String(cString: vitmsn_qgemm_tile()))" }

    /// The measured FMA peak (GFLOP/s) of `threads` cores at the dispatched vector width: register-only FMA
    /// chains on every thread at once.
    public static func fmaPeakGFLOPs(threads: Int, iterations: Int = 40_000_000) -> Double {
        vitmsn_fma_peak_gflops(Int32(threads), iterations)
    }
    /// The measured peak (G operations/s, 2 a product) of `threads` cores for the int8 kernel's instructions:
    /// register-only chains of the mix it runs.
    public static func int8PeakGOPs(threads: Int, iterations: Int = 20_000_000) -> Double {
        vitmsn_int8_peak_gops(Int32(threads), iterations)
    }

    public static func exp(_ x: [Float]) -> [Float] { map(x, vitmsn_exp) }
    public static func erf(_ x: [Float]) -> [Float] { map(x, vitmsn_erf) }

    private static func map(_ x: [Float], _ kernel: (UnsafePointer<Float>?, UnsafeMutablePointer<Float>?, Int) -> Void) -> [Float] {
        var y = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { input in
            y.withUnsafeMutableBufferPointer { output in kernel(input.baseAddress, output.baseAddress, x.count) }
        }
        return y
    }
}
