#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small seeded generator (SplitMix64) so initialisation and, later, augmentation are reproducible.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    /// The whole state: `SeededGenerator(seed: state)` continues the sequence exactly (for resuming).
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// An independent stream for one item of a seeded process (an epoch, a sample), so results do not depend
    /// on the order or the threads the items are processed in.
    public init(seed: UInt64, _ keys: Int...) {
        var mixed = SeededGenerator(seed: seed)
        for key in keys { mixed = SeededGenerator(seed: mixed.next() ^ UInt64(bitPattern: Int64(key))) }
        state = mixed.next()
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A draw from N(mean, std²) by the Box–Muller transform.
    public mutating func normal(mean: Float = 0, std: Float = 1) -> Float {
        let u1 = Double.random(in: Double.leastNonzeroMagnitude..<1, using: &self)
        let u2 = Double.random(in: 0..<1, using: &self)
        return mean + std * Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}
