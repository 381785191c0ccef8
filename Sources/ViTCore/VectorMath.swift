/// Sixteen-lane transcendental functions built only from arithmetic, min/max and bit operations, so they
/// vectorise at any target CPU. libm calls, and Swift's generic SIMD comparisons and selections (`.<`,
/// `replacing(with:where:)`, `clamped`, `pointwiseMax`), run one lane at a time: 8× slower for GELU, measured.
public typealias Vector16 = SIMD16<Float>

@inline(__always)
func load16(_ p: UnsafePointer<Float>) -> Vector16 {
    UnsafeRawPointer(p).loadUnaligned(as: Vector16.self)
}

@inline(__always)
func store16(_ v: Vector16, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector16.self)
}

// MARK: - Lane selection without SIMD masks

/// All ones in the lanes where `a < b` (for ordered inputs), from the sign bit of `a − b`.
@inline(__always)
func lanesBelow(_ a: Vector16, _ b: Vector16) -> SIMD16<Int32> {
    unsafeBitCast(a - b, to: SIMD16<Int32>.self) &>> 31
}

/// `mask` lanes from `ifTrue`, the others from `ifFalse`.
@inline(__always)
func select(_ mask: SIMD16<Int32>, _ ifTrue: Vector16, _ ifFalse: Vector16) -> Vector16 {
    let t = unsafeBitCast(ifTrue, to: SIMD16<Int32>.self)
    let f = unsafeBitCast(ifFalse, to: SIMD16<Int32>.self)
    return unsafeBitCast((t & mask) | (f & ~mask), to: Vector16.self)
}

@inline(__always)
public func maximum(_ a: Vector16, _ b: Vector16) -> Vector16 { select(lanesBelow(a, b), b, a) }

@inline(__always)
public func minimum(_ a: Vector16, _ b: Vector16) -> Vector16 { select(lanesBelow(a, b), a, b) }

public enum VectorMath {
    /// e^x with relative error below 2e-7 on [-87, 88] (Cephes' expf polynomial after reduction by ln 2).
    /// Inputs below -87.3 return about 1e-38 rather than flushing to zero, which no caller distinguishes.
    @inline(__always)
    public static func exp(_ input: Vector16) -> Vector16 {
        let x = maximum(minimum(input, Vector16(repeating: 88.3)), Vector16(repeating: -87.3))
        // Round x·log2(e) to an integer n with the 1.5·2²³ trick: n sits in the low mantissa bits.
        let shifter = Vector16(repeating: 12_582_912)
        let shifted = x * Vector16(repeating: 1.442_695_04) + shifter
        let n = shifted - shifter
        var r = x - n * Vector16(repeating: 0.693_359_375)
        r = r - n * Vector16(repeating: -2.121_944_4e-4)
        var p = Vector16(repeating: 1.987_569_15e-4)
        p = p * r + Vector16(repeating: 1.398_199_95e-3)
        p = p * r + Vector16(repeating: 8.333_451_9e-3)
        p = p * r + Vector16(repeating: 4.166_579_59e-2)
        p = p * r + Vector16(repeating: 1.666_666_55e-1)
        p = p * r + Vector16(repeating: 5.000_000_12e-1)
        let er = p * r * r + r + Vector16(repeating: 1)
        let shiftedBits = unsafeBitCast(shifted, to: SIMD16<UInt32>.self)
        let exponentBits = (shiftedBits &- 0x4B40_0000 &+ 127) &<< 23
        return er * unsafeBitCast(exponentBits, to: Vector16.self)
    }

    /// erf(x) by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), the form PyTorch's vectorised CPU
    /// GELU uses.
    @inline(__always)
    public static func erf(_ x: Vector16) -> Vector16 {
        // erf is odd: work on |x| and put the sign bit back (bit operations vectorise; SIMD masks do not).
        let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
        let sign = bits & 0x8000_0000
        let ax = unsafeBitCast(bits & 0x7FFF_FFFF, to: Vector16.self)
        let t = 1 / (1 + Vector16(repeating: 0.327_591_1) * ax)
        var poly = Vector16(repeating: 1.061_405_429)
        poly = poly * t + Vector16(repeating: -1.453_152_027)
        poly = poly * t + Vector16(repeating: 1.421_413_741)
        poly = poly * t + Vector16(repeating: -0.284_496_736)
        poly = poly * t + Vector16(repeating: 0.254_829_592)
        let y = 1 - poly * t * exp(-ax * ax)
        return unsafeBitCast(unsafeBitCast(y, to: SIMD16<UInt32>.self) | sign, to: Vector16.self)
    }

    @inline(__always)
    public static func tanh(_ x: Vector16) -> Vector16 {
        // tanh(x) = 1 - 2 / (e^{2x} + 1); saturates cleanly because exp is clamped.
        1 - 2 / (exp(2 * x) + 1)
    }

    @inline(__always)
    public static func sigmoid(_ x: Vector16) -> Vector16 {
        1 / (1 + exp(-x))
    }
}

/// Applies `vector` to whole 16-lane blocks of `count` floats in place, and `vector` again on a padded copy of
/// the tail, so a single definition serves every element.
@inline(__always)
public func mapInPlace(_ p: UnsafeMutablePointer<Float>, count: Int, _ vector: (Vector16) -> Vector16) {
    var i = 0
    while i + 16 <= count {
        store16(vector(load16(p + i)), p + i)
        i += 16
    }
    if i < count {
        var tail = Vector16()
        for j in 0..<(count - i) { tail[j] = p[i + j] }
        let result = vector(tail)
        for j in 0..<(count - i) { p[i + j] = result[j] }
    }
}

/// Sum of `count` floats with sixteen independent accumulators.
@inline(__always)
public func sum(_ p: UnsafePointer<Float>, count: Int) -> Float {
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
