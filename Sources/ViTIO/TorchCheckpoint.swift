import ViTCore

/// A `torch.save` file (`pytorch_model.bin`, an original MSN `.pth.tar`): a zip with `<prefix>/data.pkl`
/// and one `<prefix>/data/<key>` entry per storage. Tensors anywhere in the pickled object are named by
/// their dotted path (`target_encoder.module.norm.weight`); a plain state dict gives the names as saved.
public final class TorchCheckpoint: TensorSource {
    /// Deeper nesting, or more values, than any checkpoint has: a pickle built to exhaust the reader.
    static let maxDepth = 64
    static let maxValues = 10_000_000

    public let path: String
    public let root: PickleValue
    public let tensors: [String: TorchTensor]
    private let archive: ZipArchive
    private let prefix: String

    public var location: String { path }
    public var tensorNames: [String] { tensors.keys.sorted() }

    public convenience init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        path = file.path
        let bytes = file.bytes
        if bytes.starts(with: [0x80]) || bytes.starts(with: [0x8A, 0x0A]) {
            throw CheckpointError(path, "this is the legacy torch.save format of PyTorch < 1.6; re-save it with a newer PyTorch (torch.save(torch.load(f), f))")
        }
        guard bytes.starts(with: [0x50, 0x4B, 0x03, 0x04]) else {
            throw CheckpointError(path, "not a PyTorch checkpoint (no zip signature)")
        }
        archive = try ZipArchive(file: file)
        let pickles = archive.entries.keys.filter { $0.hasSuffix("/data.pkl") || $0 == "data.pkl" }
        guard pickles.count == 1, let pickle = pickles.first else {
            throw CheckpointError(path, "expected one data.pkl in the archive, found \(pickles.count)")
        }
        prefix = String(pickle.dropLast("data.pkl".count))
        if let order = archive.entries[prefix + "byteorder"], String(decoding: try archive.contents(of: order.name), as: UTF8.self) != "little" {
            throw CheckpointError(path, "big-endian checkpoints are not supported")
        }
        var unpickler = Unpickler(data: try archive.contents(of: pickle), path: path)
        root = try unpickler.run()
        var found: [String: TorchTensor] = [:]
        var visited = 0
        try Self.collect(root, name: "", depth: 0, visited: &visited, into: &found, path: path)
        tensors = found
    }

    private static func collect(
        _ value: PickleValue, name: String, depth: Int, visited: inout Int, into found: inout [String: TorchTensor], path: String
    ) throws {
        visited += 1
        guard depth <= maxDepth, visited <= maxValues else {
            throw CheckpointError(path, "pickle: objects nested deeper than \(maxDepth) levels or more than \(maxValues) values; refusing it")
        }
        func child(_ key: String) -> String { name.isEmpty ? key : name + "." + key }
        switch value {
        case .tensor(let tensor): found[name] = tensor
        case .dict(let dict):
            for (key, item) in dict.items {
                let label: String
                switch key {
                case .string(let s): label = s
                case .int(let i): label = String(i)
                default: continue // keys of other kinds name no tensor a model needs
                }
                try collect(item, name: child(label), depth: depth + 1, visited: &visited, into: &found, path: path)
            }
        case .list(let list):
            for (i, item) in list.items.enumerated() { try collect(item, name: child(String(i)), depth: depth + 1, visited: &visited, into: &found, path: path) }
        case .tuple(let tuple):
            for (i, item) in tuple.items.enumerated() { try collect(item, name: child(String(i)), depth: depth + 1, visited: &visited, into: &found, path: path) }
        default: break
        }
    }

    public func info(_ name: String) -> TensorInfo? {
        guard let tensor = tensors[name], let entry = archive.entries[prefix + "data/" + tensor.storage.key] else { return nil }
        return TensorInfo(name: name, dtype: tensor.storage.dtype, shape: tensor.shape, dataRange: entry.data)
    }

    /// The bytes of a storage, checked once: CRC, and large enough for the elements it claims.
    private func storageBytes(_ storage: TorchStorage) throws -> UnsafeRawBufferPointer {
        let name = prefix + "data/" + storage.key
        let bytes = try archive.contents(of: name) // verifies the CRC (once per entry)
        guard bytes.count >= storage.count * storage.dtype.byteSize else {
            throw CheckpointError(path, "storage '\(storage.key)' holds \(bytes.count) bytes, fewer than its \(storage.count) \(storage.dtype) elements")
        }
        return bytes
    }

    public func floatTensor(_ name: String) throws -> Tensor {
        guard let tensor = tensors[name] else { throw CheckpointError(path, "no tensor named '\(name)'") }
        let storage = tensor.storage
        let bytes = try storageBytes(storage)
        let count = tensor.shape.reduce(1, *)
        // The furthest element the view reaches must lie inside the storage.
        let last = tensor.offset + zip(tensor.shape, tensor.stride).reduce(0) { $0 + max($1.0 - 1, 0) * $1.1 }
        guard count == 0 || last < storage.count else {
            throw CheckpointError(path, "tensor '\(name)' (shape \(tensor.shape), stride \(tensor.stride), offset \(tensor.offset)) reaches past its storage of \(storage.count) elements")
        }
        let contiguous = zip(tensor.shape, tensor.stride).reversed().reduce((true, 1)) { state, dim in
            (state.0 && (dim.0 == 1 || dim.1 == state.1), state.1 * dim.0)
        }.0
        let base = bytes.baseAddress! + tensor.offset * storage.dtype.byteSize
        if storage.dtype == .F32, contiguous, count > 0, Int(bitPattern: base) % MemoryLayout<Float>.alignment == 0 {
            return Tensor(shape: tensor.shape, storage: TensorStorage(borrowing: base.assumingMemoryBound(to: Float.self), count: count, owner: archive.file, fileMapped: true))
        }
        // Strided or converted: gather element by element in row-major order.
        var result = Tensor(zeros: tensor.shape)
        let element = UnsafeRawBufferPointer(rebasing: bytes[0..<(storage.count * storage.dtype.byteSize)])
        result.withUnsafeMutableBufferPointer { out in
            var index = [Int](repeating: 0, count: tensor.shape.count)
            for i in 0..<count {
                let source = tensor.offset + zip(index, tensor.stride).reduce(0) { $0 + $1.0 * $1.1 }
                out[i] = readElement(element, source, storage.dtype)
                for d in stride(from: index.count - 1, through: 0, by: -1) {
                    index[d] += 1
                    if index[d] < tensor.shape[d] { break }
                    index[d] = 0
                }
            }
        }
        return result
    }
}

/// Element `i` of a buffer of `dtype`, as Float.
@inline(__always)
func readElement(_ raw: UnsafeRawBufferPointer, _ i: Int, _ dtype: DType) -> Float {
    switch dtype {
    case .F32: raw.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)
    case .F64: Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self))
    case .F16: HalfPrecision.float(fromF16: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
    case .BF16: HalfPrecision.float(fromBF16: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
    case .I64: Float(raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
    case .I32: Float(raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))
    case .I16: Float(raw.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))
    case .I8: Float(raw.load(fromByteOffset: i, as: Int8.self))
    case .U8, .BOOL: Float(raw[i])
    }
}
