import CZlib
import Foundation

/// An IDX file (the MNIST / Fashion-MNIST format): big-endian magic `0 0 type rank`, `rank` big-endian UInt32
/// dimensions, then the values row-major. Only unsigned bytes (type 0x08) are read. Files ending in `.gz`
/// are inflated with zlib first.
public struct IDXFile {
    public let shape: [Int]
    public let values: [UInt8]

    public init(path: String) throws {
        let bytes = path.hasSuffix(".gz") ? try gunzip(path: path) : try Data(contentsOf: URL(fileURLWithPath: path))
        try self.init(bytes: [UInt8](bytes), path: path)
    }

    init(bytes: [UInt8], path: String) throws {
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else {
            throw CheckpointError(path, "not an IDX file (the magic number must start with two zero bytes)")
        }
        guard bytes[2] == 0x08 else {
            throw CheckpointError(path, String(format: "IDX element type 0x%02x is not supported (only unsigned bytes, 0x08)", bytes[2]))
        }
        let rank = Int(bytes[3])
        let headerSize = 4 + 4 * rank
        guard rank > 0, bytes.count >= headerSize else { throw CheckpointError(path, "IDX header of rank \(rank) is truncated") }
        let shape = (0..<rank).map { d in (0..<4).reduce(0) { $0 << 8 | Int(bytes[4 + 4 * d + $1]) } }
        let count = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        guard bytes.count - headerSize == count else {
            throw CheckpointError(path, "IDX shape \(shape) needs \(count) bytes of data, the file has \(bytes.count - headerSize)")
        }
        self.shape = shape
        values = Array(bytes[headerSize...])
    }
}

/// The contents of a gzip file, inflated by zlib (refusing more than `limit` bytes).
package func gunzip(path: String, limit: Int = 1 << 31) throws -> Data {
    guard let file = gzopen(path, "rb") else { throw CheckpointError(path, "cannot open") }
    defer { gzclose(file) }
    var result = Data()
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let read = chunk.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32($0.count)) }
        if read < 0 {
            var code: Int32 = 0
            let message = gzerror(file, &code).map { String(cString: $0) } ?? "unknown error"
            throw CheckpointError(path, "gzip data is corrupt: \(message)")
        }
        if read == 0 { break }
        result.append(contentsOf: chunk[0..<Int(read)])
        guard result.count <= limit else { throw CheckpointError(path, "inflates to more than \(limit) bytes") }
    }
    return result
}
