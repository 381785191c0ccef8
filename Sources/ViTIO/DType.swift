/// Element types of the safetensors format that this project reads.
public enum DType: String, CaseIterable, Sendable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL

    public var byteSize: Int {
        switch self {
        case .F64, .I64: 8
        case .F32, .I32: 4
        case .F16, .BF16, .I16: 2
        case .I8, .U8, .BOOL: 1
        }
    }

    public var isFloatingPoint: Bool { [.F64, .F32, .F16, .BF16].contains(self) }
}

/// Conversions between the storage formats and Float32, rounding as PyTorch does (to nearest, ties to even).
public enum HalfPrecision {
    @inline(__always)
    public static func float(fromBF16 bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    @inline(__always)
    public static func bf16Bits(from value: Float) -> UInt16 {
        if value.isNaN { return 0x7FC0 }
        let bits = value.bitPattern
        let roundingBias = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ roundingBias) >> 16)
    }

    @inline(__always)
    public static func float(fromF16 bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

    @inline(__always)
    public static func f16Bits(from value: Float) -> UInt16 { Float16(value).bitPattern }
}
