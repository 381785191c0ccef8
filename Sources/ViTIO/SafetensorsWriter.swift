import Foundation
import ViTCore

/// One tensor to write: Float32 data stored as `dtype` (converted on the way out), or raw integer bytes.
public struct SafetensorsRecord {
    public enum Payload {
        case float(Tensor)
        case int64([Int64])
        case int8([Int8])
        case bool([Bool])
    }

    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let payload: Payload

    public init(name: String, tensor: Tensor, dtype: DType = .F32) {
        precondition([.F32, .F16, .BF16].contains(dtype), "floats are written as F32, F16 or BF16")
        self.name = name
        self.dtype = dtype
        shape = tensor.shape
        payload = .float(tensor)
    }

    public init(name: String, int64 values: [Int64], shape: [Int]) {
        self.init(name: name, dtype: .I64, shape: shape, payload: .int64(values), count: values.count)
    }

    public init(name: String, int8 values: [Int8], shape: [Int]) {
        self.init(name: name, dtype: .I8, shape: shape, payload: .int8(values), count: values.count)
    }

    public init(name: String, bool values: [Bool], shape: [Int]) {
        self.init(name: name, dtype: .BOOL, shape: shape, payload: .bool(values), count: values.count)
    }

    private init(name: String, dtype: DType, shape: [Int], payload: Payload, count: Int) {
        precondition(Tensor.elementCount(shape) == count, "\(count) values for shape \(shape)")
        (self.name, self.dtype, self.shape, self.payload) = (name, dtype, shape, payload)
    }

    var byteCount: Int { Tensor.elementCount(shape) * dtype.byteSize }

    func encoded() -> Data {
        var data = Data(capacity: byteCount)
        switch payload {
        case .float(let tensor):
            tensor.withUnsafeBufferPointer { values in
                switch dtype {
                case .F32: data.append(contentsOf: UnsafeRawBufferPointer(values))
                case .F16: data.append(contentsOf: values.flatMap { littleEndianBytes(HalfPrecision.f16Bits(from: $0)) })
                default: data.append(contentsOf: values.flatMap { littleEndianBytes(HalfPrecision.bf16Bits(from: $0)) })
                }
            }
        case .int64(let values):
            values.withUnsafeBufferPointer { data.append(contentsOf: UnsafeRawBufferPointer($0)) }
        case .int8(let values):
            values.withUnsafeBufferPointer { data.append(contentsOf: UnsafeRawBufferPointer($0)) }
        case .bool(let values):
            data.append(contentsOf: values.map { $0 ? 1 : 0 })
        }
        return data
    }
}

@inline(__always)
private func littleEndianBytes(_ value: UInt16) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8)] }

public enum SafetensorsWriter {
    /// Writes the records to `path` atomically: the bytes go to a temporary file in the same directory,
    /// which is renamed over `path` only when complete, so a crash never leaves a half-written file behind.
    public static func write(_ records: [SafetensorsRecord], metadata: [String: String] = ["format": "pt"], to path: String) throws {
        // Widest element types first, as the reference writer does, so every tensor stays aligned.
        let ordered = records.sorted { ($0.dtype.byteSize, $1.name) > ($1.dtype.byteSize, $0.name) }
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for record in ordered {
            header[record.name] = [
                "dtype": record.dtype.rawValue,
                "shape": record.shape,
                "data_offsets": [offset, offset + record.byteCount],
            ] as [String: Any]
            offset += record.byteCount
        }
        var headerBytes = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad with spaces so the data section starts 8-byte aligned.
        headerBytes.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - headerBytes.count % 8) % 8))
        var file = Data()
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(headerBytes)
        for record in ordered { file.append(record.encoded()) }
        try writeAtomically(file, to: path)
    }
}

/// Whether `path` names a stream rather than a file: `-` (standard output), anything under /dev or /proc
/// (`/dev/stdout` is a link to whatever standard output is, a regular file included), or an existing
/// character device, pipe or socket (a FIFO), links followed.
public func isStream(_ path: String) -> Bool {
    if path == "-" || path.hasPrefix("/dev/") || path.hasPrefix("/proc/") { return true }
    var info = stat()
    guard stat(path, &info) == 0 else { return false }
    let type = info.st_mode & S_IFMT
    return type == S_IFCHR || type == S_IFIFO || type == S_IFSOCK
}

/// Writes `data` to a temporary sibling of `path`, flushes it, and renames it into place. A stream (`-`, a
/// device, a pipe; see `isStream`) is written through instead: renaming over it would replace a device
/// link with a regular file.
package func writeAtomically(_ data: Data, to path: String) throws {
    if isStream(path) {
        guard let handle = path == "-" ? FileHandle.standardOutput : FileHandle(forWritingAtPath: path) else {
            throw CheckpointError(path, "cannot open for writing")
        }
        do { try handle.write(contentsOf: data) } catch { throw CheckpointError(path, "cannot write: \(error.localizedDescription)") }
        return
    }
    let url = URL(fileURLWithPath: path)
    let temporary = url.deletingLastPathComponent()
        .appendingPathComponent(".\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)")
    do {
        try data.write(to: temporary)
        let handle = try FileHandle(forWritingTo: temporary)
        try handle.synchronize()
        try handle.close()
        // rename(2) replaces the target in one step: readers see the old file or the new one, never a mix.
        guard rename(temporary.path, path) == 0 else {
            throw CheckpointError(path, "cannot rename into place: \(String(cString: strerror(errno)))")
        }
    } catch let error as CheckpointError {
        try? FileManager.default.removeItem(at: temporary)
        throw error
    } catch {
        try? FileManager.default.removeItem(at: temporary)
        throw CheckpointError(path, "cannot write: \(error.localizedDescription)")
    }
}

/// Runs `body` on a new hidden sibling of `directory`, then puts what it wrote in place, so that a kill or a
/// full disk never leaves a directory that looks written: `directory` ends up missing, as it was, or whole.
/// A missing or empty `directory` is replaced by the sibling in one rename; into one that holds files (which
/// the caller was asked to overwrite) the new files move one by one, after its `config.json` is removed and
/// with the new `config.json` last, so that the directory never loads half old and half new.
public func writeDirectoryAtomically(_ directory: String, _ body: (String) throws -> Void) throws {
    let url = URL(fileURLWithPath: directory)
    let parent = url.deletingLastPathComponent().path
    let staging = parent + "/.\(url.lastPathComponent).partial-\(ProcessInfo.processInfo.processIdentifier)"
    let manager = FileManager.default
    var isDirectory: ObjCBool = false
    if manager.fileExists(atPath: directory, isDirectory: &isDirectory), !isDirectory.boolValue {
        throw CheckpointError(directory, "exists and is not a directory")
    }
    try? manager.removeItem(atPath: staging)
    if let failure = createDirectories(parent) ?? (mkdir(staging, 0o755) == 0 ? nil : String(cString: strerror(errno))) {
        throw CheckpointError(directory, "cannot create: \(failure)")
    }
    do {
        try body(staging)
        let existing = (try? manager.contentsOfDirectory(atPath: directory)) ?? []
        if existing.isEmpty {
            if manager.fileExists(atPath: directory) { try manager.removeItem(atPath: directory) }
            guard rename(staging, directory) == 0 else { throw CheckpointError(directory, "cannot rename into place: \(String(cString: strerror(errno)))") }
            return
        }
        try? manager.removeItem(atPath: directory + "/config.json")
        let files = try manager.contentsOfDirectory(atPath: staging).sorted { ($0 == "config.json" ? 1 : 0, $0) < ($1 == "config.json" ? 1 : 0, $1) }
        for file in files where rename(staging + "/" + file, directory + "/" + file) != 0 {
            throw CheckpointError(directory + "/" + file, "cannot rename into place: \(String(cString: strerror(errno)))")
        }
        try? manager.removeItem(atPath: staging)
    } catch {
        try? manager.removeItem(atPath: staging)
        throw error
    }
}
