import Foundation
import ViTCore

/// Where one tensor lives in a safetensors file.
public struct TensorInfo: Equatable, Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Byte range inside the data section (after the header).
    public let dataRange: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
}

/// Anything that serves named tensors: one safetensors file, a sharded set of them, later other formats.
public protocol TensorSource: AnyObject {
    /// The file (or index) the tensors come from, for error messages.
    var location: String { get }
    var tensorNames: [String] { get }
    func info(_ name: String) -> TensorInfo?
    /// The tensor converted to Float32 (zero-copy where the file holds aligned F32).
    func floatTensor(_ name: String) throws -> Tensor
    /// Gives the tensor's pages of a memory-mapped file back to the kernel once its values have been copied
    /// elsewhere (an int8 weight packed for the GEMM), so that they do not count twice in resident memory.
    func releaseResidentPages(_ name: String)
    /// An I8 tensor's values (a quantised weight).
    func int8Values(_ name: String) throws -> [Int8]
}

extension TensorSource {
    public func releaseResidentPages(_ name: String) {}

    /// Through Float32, which holds every int8 exactly; a safetensors file copies the bytes instead.
    public func int8Values(_ name: String) throws -> [Int8] {
        try floatTensor(name).scalars.map { Int8(clamping: Int($0)) }
    }
}

/// A `.safetensors` file, memory-mapped and validated when opened: a header that could make any later read
/// leave the file is rejected here, so reads after `init` cannot go out of bounds.
public final class SafetensorsFile: TensorSource {
    /// The reference implementation's limit; a larger header is certainly not a checkpoint.
    public static let maxHeaderBytes = 100_000_000

    public let path: String
    public let tensors: [String: TensorInfo]
    public let metadata: [String: String]?
    private let file: MappedFile
    private let dataStart: Int

    public var tensorNames: [String] { tensors.keys.sorted() }
    public var location: String { path }

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        path = file.path
        let bytes = file.bytes
        guard bytes.count >= 8 else {
            throw CheckpointError(path, "file is \(bytes.count) bytes, too short for the 8-byte header length")
        }
        let headerLength = bytes.loadUnaligned(as: UInt64.self).littleEndian
        guard headerLength <= UInt64(Self.maxHeaderBytes) else {
            throw CheckpointError(path, "header length \(headerLength) exceeds the \(Self.maxHeaderBytes)-byte limit")
        }
        guard Int(headerLength) <= bytes.count - 8 else {
            throw CheckpointError(path, "header length \(headerLength) runs past the end of the \(bytes.count)-byte file")
        }
        dataStart = 8 + Int(headerLength)
        let headerData = Data(bytes[8..<dataStart])
        // As the reference implementation: UTF-8 that starts with '{' (JSONSerialization alone would also take
        // UTF-16, UTF-32 and a byte-order mark, which other readers refuse).
        guard headerData.first == UInt8(ascii: "{"), String(data: headerData, encoding: .utf8) != nil else {
            throw CheckpointError(path, "header must be UTF-8 JSON starting with '{' (found byte \(headerData.first.map { String(format: "0x%02x", $0) } ?? "none"))")
        }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: headerData)
        } catch {
            throw CheckpointError(path, "header is not valid JSON (\(error.localizedDescription))")
        }
        guard let object = json as? [String: Any] else {
            throw CheckpointError(path, "header is not a JSON object")
        }
        (tensors, metadata) = try Self.parseHeader(object, dataSize: bytes.count - dataStart, path: path)
    }

    private static func parseHeader(
        _ object: [String: Any], dataSize: Int, path: String
    ) throws -> ([String: TensorInfo], [String: String]?) {
        var metadata: [String: String]?
        var tensors: [String: TensorInfo] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                guard let entries = value as? [String: Any] else {
                    throw CheckpointError(path, "__metadata__ is not an object")
                }
                metadata = try entries.mapValues {
                    guard let text = $0 as? String else { throw CheckpointError(path, "__metadata__ values must be strings") }
                    return text
                }
                continue
            }
            tensors[name] = try parseEntry(name: name, value, dataSize: dataSize, path: path)
        }
        // No two tensors may share bytes.
        let ordered = tensors.values.filter { !$0.dataRange.isEmpty }.sorted { $0.dataRange.lowerBound < $1.dataRange.lowerBound }
        for (previous, next) in zip(ordered, ordered.dropFirst()) where next.dataRange.lowerBound < previous.dataRange.upperBound {
            throw CheckpointError(path, "tensors '\(previous.name)' and '\(next.name)' overlap")
        }
        return (tensors, metadata)
    }

    private static func parseEntry(name: String, _ value: Any, dataSize: Int, path: String) throws -> TensorInfo {
        func fail(_ reason: String) -> CheckpointError { CheckpointError(path, "tensor '\(name)': \(reason)") }
        guard let entry = value as? [String: Any] else { throw fail("entry is not an object") }
        guard let dtypeName = entry["dtype"] as? String else { throw fail("missing dtype") }
        guard let dtype = DType(rawValue: dtypeName) else { throw fail("unsupported dtype '\(dtypeName)'") }
        guard let shapeValues = entry["shape"] as? [Any], let shape = integers(shapeValues), shape.allSatisfy({ $0 >= 0 }) else {
            throw fail("shape must be a list of non-negative integers")
        }
        guard let offsetValues = entry["data_offsets"] as? [Any], let offsets = integers(offsetValues), offsets.count == 2 else {
            throw fail("data_offsets must be two integers")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin >= 0, begin <= end else { throw fail("data_offsets [\(begin), \(end)] are not an ordered range") }
        guard end <= dataSize else { throw fail("data_offsets end \(end) is beyond the \(dataSize)-byte data section") }
        var byteCount = dtype.byteSize
        for dim in shape {
            let (product, overflow) = byteCount.multipliedReportingOverflow(by: dim)
            guard !overflow else { throw fail("shape \(shape) is too large") }
            byteCount = product
        }
        guard end - begin == byteCount else {
            throw fail("holds \(end - begin) bytes but shape \(shape) of \(dtype) needs \(byteCount)")
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, dataRange: begin..<end)
    }

    private static func integers(_ values: [Any]) -> [Int]? {
        let result = values.compactMap(jsonInteger)
        return result.count == values.count ? result : nil
    }

    public func info(_ name: String) -> TensorInfo? { tensors[name] }

    public func releaseResidentPages(_ name: String) {
        if let info = tensors[name] { releaseMappedPages(rawBytes(info)) }
    }

    public func int8Values(_ name: String) throws -> [Int8] {
        let info = try lookup(name)
        guard info.dtype == .I8 else { return try floatTensor(name).scalars.map { Int8(clamping: Int($0)) } }
        return Array(rawBytes(info).bindMemory(to: Int8.self))
    }

    /// The bytes of a tensor, inside the mapping (valid while this object lives).
    public func rawBytes(_ info: TensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[(dataStart + info.dataRange.lowerBound)..<(dataStart + info.dataRange.upperBound)])
    }

    private func lookup(_ name: String) throws -> TensorInfo {
        guard let info = tensors[name] else { throw CheckpointError(path, "no tensor named '\(name)'") }
        return info
    }

    public func floatTensor(_ name: String) throws -> Tensor {
        let info = try lookup(name)
        let raw = rawBytes(info)
        let count = info.elementCount
        if info.dtype == .F32, let base = raw.baseAddress, count > 0,
           Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
            let storage = TensorStorage(borrowing: base.assumingMemoryBound(to: Float.self), count: count, owner: file, fileMapped: true)
            return Tensor(shape: info.shape, storage: storage)
        }
        var tensor = Tensor(zeros: info.shape)
        tensor.withUnsafeMutableBufferPointer { out in
            for i in 0..<count { out[i] = readElement(raw, i, info.dtype) }
        }
        return tensor
    }

    /// Integer (or boolean) tensor values; floating-point tensors are refused rather than truncated.
    public func integerValues(_ name: String) throws -> [Int64] {
        let info = try lookup(name)
        guard !info.dtype.isFloatingPoint else {
            throw CheckpointError(path, "tensor '\(name)' is \(info.dtype), expected an integer or boolean tensor")
        }
        let raw = rawBytes(info)
        return (0..<info.elementCount).map { i in
            switch info.dtype {
            case .I64: raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)
            case .I32: Int64(raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))
            case .I16: Int64(raw.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))
            case .I8: Int64(raw.load(fromByteOffset: i, as: Int8.self))
            default: Int64(raw[i])
            }
        }
    }
}
