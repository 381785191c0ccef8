/// A restricted unpickler for `torch.save` checkpoints. It builds values and never runs code: the only
/// callables are an allowlist of globals, each interpreted here (an ordered dict, tensor and parameter
/// rebuilding), and anything else is refused with an error naming it.

import Foundation

/// A pickled value. Lists and dicts are objects because pickle fills them after memoising them; tuples are
/// objects too, so that all three free their items one level at a time (`PickleGraveyard`).
public indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int64)
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple(PickleTuple)
    case list(PickleList)
    case dict(PickleDict)
    case global(module: String, name: String)
    case storage(TorchStorage)
    case tensor(TorchTensor)

    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var intValue: Int64? { if case .int(let i) = self { i } else { nil } }
}

public final class PickleTuple {
    public private(set) var items: [PickleValue]
    init(_ items: [PickleValue]) { self.items = items }
    deinit { PickleGraveyard.bury(&items) }
}

public final class PickleList {
    public var items: [PickleValue] = []
    deinit { PickleGraveyard.bury(&items) }
}

public final class PickleDict {
    public var items: [(key: PickleValue, value: PickleValue)] = []
    deinit {
        var values: [PickleValue] = []
        while let (key, value) = items.popLast() { values.append(key); values.append(value) }
        PickleGraveyard.bury(&values)
    }
}

/// Where the containers of a freed pickle value leave their items, to be freed in a loop: Swift frees a
/// nested value recursively, and a hostile pickle can nest 50,000 levels deep (TUPLE1 after TUPLE1, a list
/// in a list…), which would overflow the stack wherever such a value is dropped.
enum PickleGraveyard {
    private nonisolated(unsafe) static var buried: [PickleValue] = []
    private nonisolated(unsafe) static var draining = false
    private static let lock = NSLock()

    /// Takes the items out of a dying container (so that it frees none of them itself) and frees them one at
    /// a time, unless an outer call is already doing so.
    static func bury(_ items: inout [PickleValue]) {
        guard !items.isEmpty else { return }
        lock.lock()
        while let item = items.popLast() { buried.append(item) }  // moved: the graveyard is their only owner
        if draining { return lock.unlock() }
        draining = true
        lock.unlock()
        while true {
            lock.lock()
            guard let next = buried.popLast() else {
                draining = false
                return lock.unlock()
            }
            lock.unlock()
            withExtendedLifetime(next) {}  // freed here, outside the lock; its own items come back to `buried`
        }
    }
}

/// One `storage` entry of the archive: element type, zip entry key, element count.
public struct TorchStorage {
    public let dtype: DType
    public let key: String
    public let count: Int
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, …)`: a strided view of a storage, in elements.
public struct TorchTensor {
    public let storage: TorchStorage
    public let offset: Int
    public let shape: [Int]
    public let stride: [Int]
}

/// The globals a checkpoint may name. Storage types carry the element type of their persistent ids.
enum AllowedGlobal {
    static let storageTypes: [String: DType] = [
        "FloatStorage": .F32, "HalfStorage": .F16, "BFloat16Storage": .BF16, "DoubleStorage": .F64,
        "LongStorage": .I64, "IntStorage": .I32, "ShortStorage": .I16, "CharStorage": .I8,
        "ByteStorage": .U8, "BoolStorage": .BOOL,
    ]
    static let callables: Set<String> = [
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    ]

    static func isAllowed(module: String, name: String) -> Bool {
        callables.contains("\(module).\(name)") || (module == "torch" && storageTypes[name] != nil)
    }

    static var description: String {
        (callables.sorted() + storageTypes.keys.sorted().map { "torch.\($0)" }).joined(separator: ", ")
    }
}

struct Unpickler {
    let data: UnsafeRawBufferPointer
    let path: String
    private var position = 0
    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]

    init(data: UnsafeRawBufferPointer, path: String) {
        (self.data, self.path) = (data, path)
    }

    private func fail(_ reason: String) -> CheckpointError { CheckpointError(path, "pickle: \(reason)") }

    private mutating func bytes(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, count <= data.count - position else { throw fail("truncated at byte \(position)") }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: data[position..<(position + count)])
    }

    private mutating func byte() throws -> UInt8 { try bytes(1)[0] }
    private mutating func u16() throws -> Int { Int(try bytes(2).loadUnaligned(as: UInt16.self).littleEndian) }
    private mutating func u32() throws -> Int { Int(try bytes(4).loadUnaligned(as: UInt32.self).littleEndian) }
    private mutating func u64() throws -> Int {
        let value = try bytes(8).loadUnaligned(as: UInt64.self).littleEndian
        guard value <= UInt64(Int.max) else { throw fail("length out of range") }
        return Int(value)
    }
    private mutating func text(_ count: Int) throws -> String { String(decoding: try bytes(count), as: UTF8.self) }
    private mutating func line() throws -> String {
        guard let end = data[position...].firstIndex(of: 0x0A) else { throw fail("unterminated text argument") }
        return try text(end - position + 1).dropLast().description
    }

    private mutating func pop() throws -> PickleValue {
        guard let value = stack.popLast(), stack.count >= (marks.last ?? 0) else { throw fail("stack underflow at byte \(position)") }
        return value
    }

    private mutating func popToMark() throws -> [PickleValue] {
        guard let mark = marks.popLast(), mark <= stack.count else { throw fail("no mark at byte \(position)") }
        defer { stack.removeSubrange(mark...) }
        return Array(stack[mark...])
    }

    private mutating func top() throws -> PickleValue {
        guard let value = stack.last, stack.count > (marks.last ?? 0) else { throw fail("stack underflow at byte \(position)") }
        return value
    }

    /// Runs to STOP and returns the pickled object.
    mutating func run() throws -> PickleValue {
        while true {
            let opcodePosition = position
            let opcode = try byte()
            switch opcode {
            case 0x80: // PROTO
                let version = try byte()
                guard (2...5).contains(version) else { throw fail("protocol \(version) is not supported (2 to 5 are)") }
            case 0x95: _ = try u64() // FRAME: a length hint only
            case 0x2E: return try pop() // STOP
            case 0x7D: stack.append(.dict(PickleDict())) // EMPTY_DICT
            case 0x5D: stack.append(.list(PickleList())) // EMPTY_LIST
            case 0x29: stack.append(.tuple(PickleTuple([]))) // EMPTY_TUPLE
            case 0x28: marks.append(stack.count) // MARK
            case 0x74: stack.append(.tuple(PickleTuple(try popToMark()))) // TUPLE
            case 0x85: stack.append(.tuple(PickleTuple([try pop()]))) // TUPLE1
            case 0x86: let b = try pop(); stack.append(.tuple(PickleTuple([try pop(), b]))) // TUPLE2
            case 0x87: let c = try pop(), b = try pop(); stack.append(.tuple(PickleTuple([try pop(), b, c]))) // TUPLE3
            case 0x4E: stack.append(.none) // NONE
            case 0x88: stack.append(.bool(true)) // NEWTRUE
            case 0x89: stack.append(.bool(false)) // NEWFALSE
            case 0x4A: stack.append(.int(Int64(Int32(truncatingIfNeeded: try u32())))) // BININT
            case 0x4B: stack.append(.int(Int64(try byte()))) // BININT1
            case 0x4D: stack.append(.int(Int64(try u16()))) // BININT2
            case 0x8A: // LONG1: little-endian two's complement of n bytes
                let n = Int(try byte())
                guard n <= 8 else { throw fail("integer of \(n) bytes is out of range") }
                let raw = try bytes(n)
                var value: UInt64 = 0
                for (i, b) in raw.enumerated() { value |= UInt64(b) << (8 * UInt64(i)) }
                if n > 0, n < 8, raw[n - 1] & 0x80 != 0 { value |= ~0 << (8 * UInt64(n)) }
                stack.append(.int(Int64(bitPattern: value)))
            case 0x47: // BINFLOAT, big-endian
                stack.append(.float(Double(bitPattern: try bytes(8).loadUnaligned(as: UInt64.self).bigEndian)))
            case 0x58: stack.append(.string(try text(try u32()))) // BINUNICODE
            case 0x8C: stack.append(.string(try text(Int(try byte())))) // SHORT_BINUNICODE
            case 0x8D: stack.append(.string(try text(try u64()))) // BINUNICODE8
            case 0x54: stack.append(.string(try text(try u32()))) // BINSTRING
            case 0x55: stack.append(.string(try text(Int(try byte())))) // SHORT_BINSTRING
            case 0x42: stack.append(.bytes(Array(try bytes(try u32())))) // BINBYTES
            case 0x43: stack.append(.bytes(Array(try bytes(Int(try byte()))))) // SHORT_BINBYTES
            case 0x8E: stack.append(.bytes(Array(try bytes(try u64())))) // BINBYTES8
            case 0x71: memo[Int(try byte())] = try top() // BINPUT
            case 0x72: memo[try u32()] = try top() // LONG_BINPUT
            case 0x94: memo[memo.count] = try top() // MEMOIZE
            case 0x68, 0x6A: // BINGET, LONG_BINGET
                let index = opcode == 0x68 ? Int(try byte()) : try u32()
                guard let value = memo[index] else { throw fail("memo entry \(index) was never stored") }
                stack.append(value)
            case 0x63: try pushGlobal(module: try line(), name: try line()) // GLOBAL
            case 0x93: // STACK_GLOBAL
                let name = try pop(), module = try pop()
                guard let m = module.stringValue, let n = name.stringValue else { throw fail("STACK_GLOBAL needs two strings") }
                try pushGlobal(module: m, name: n)
            case 0x52: // REDUCE
                let arguments = try pop(), callable = try pop()
                stack.append(try call(callable, arguments))
            case 0x51: stack.append(try persistentLoad(try pop())) // BINPERSID
            case 0x62: _ = try pop(); _ = try top() // BUILD: instance state (a state dict's _metadata) is not needed
            case 0x73: // SETITEM
                let value = try pop(), key = try pop()
                try dictionary(try top()).items.append((key, value))
            case 0x75: // SETITEMS
                let items = try popToMark()
                guard items.count % 2 == 0 else { throw fail("SETITEMS with an odd number of items") }
                let dict = try dictionary(try top())
                for i in stride(from: 0, to: items.count, by: 2) { dict.items.append((items[i], items[i + 1])) }
            case 0x61: // APPEND
                let value = try pop()
                try list(try top()).items.append(value)
            case 0x65: // APPENDS
                let items = try popToMark()
                try list(try top()).items.append(contentsOf: items)
            default:
                throw fail("opcode 0x\(String(opcode, radix: 16)) at byte \(opcodePosition) is not one torch.save emits; refusing it")
            }
        }
    }

    private func dictionary(_ value: PickleValue) throws -> PickleDict {
        guard case .dict(let d) = value else { throw fail("SETITEM(S) on something that is not a dict") }
        return d
    }

    private func list(_ value: PickleValue) throws -> PickleList {
        guard case .list(let l) = value else { throw fail("APPEND(S) on something that is not a list") }
        return l
    }

    private mutating func pushGlobal(module: String, name: String) throws {
        guard AllowedGlobal.isAllowed(module: module, name: name) else {
            throw fail("refusing global '\(module).\(name)': checkpoints may only name \(AllowedGlobal.description)")
        }
        stack.append(.global(module: module, name: name))
    }

    private func call(_ callable: PickleValue, _ arguments: PickleValue) throws -> PickleValue {
        guard case .global(let module, let name) = callable, case .tuple(let tuple) = arguments else {
            throw fail("REDUCE needs an allowed global and an argument tuple")
        }
        let args = tuple.items
        switch "\(module).\(name)" {
        case "collections.OrderedDict":
            return .dict(PickleDict())
        case "torch._utils._rebuild_parameter":
            guard case .tensor = args.first else { throw fail("_rebuild_parameter without a tensor") }
            return args[0]
        case "torch._utils._rebuild_tensor_v2":
            guard args.count >= 4, case .storage(let storage) = args[0], let offset = args[1].intValue,
                  case .tuple(let sizes) = args[2], case .tuple(let strides) = args[3]
            else { throw fail("_rebuild_tensor_v2 with unexpected arguments") }
            let (sizeValues, strideValues) = (sizes.items, strides.items)
            let shape = sizeValues.compactMap(\.intValue).map(Int.init)
            let stride = strideValues.compactMap(\.intValue).map(Int.init)
            guard shape.count == sizeValues.count, stride.count == shape.count, offset >= 0, shape.allSatisfy({ $0 >= 0 }), stride.allSatisfy({ $0 >= 0 }) else {
                throw fail("_rebuild_tensor_v2 with a malformed size, stride or offset")
            }
            // The element count and the furthest element reached must be countable (no overflow later).
            var (count, last) = (1, Int(offset))
            for (size, step) in zip(shape, stride) {
                let product = count.multipliedReportingOverflow(by: size)
                let reach = max(size - 1, 0).multipliedReportingOverflow(by: step)
                let furthest = reach.overflow ? (0, true) : last.addingReportingOverflow(reach.partialValue)
                guard !product.overflow, !furthest.1 else {
                    throw fail("_rebuild_tensor_v2 with size \(shape), stride \(stride) and offset \(offset), beyond any storage")
                }
                (count, last) = (product.partialValue, furthest.0)
            }
            return .tensor(TorchTensor(storage: storage, offset: Int(offset), shape: shape, stride: stride))
        default:
            throw fail("'\(module).\(name)' cannot be called")
        }
    }

    /// `('storage', torch.XStorage, key, location, numel)`, as torch.save's persistent_id writes it.
    private func persistentLoad(_ id: PickleValue) throws -> PickleValue {
        guard case .tuple(let tuple) = id, case let parts = tuple.items, parts.count == 5, parts[0].stringValue == "storage",
              case .global(_, let typeName) = parts[1], let dtype = AllowedGlobal.storageTypes[typeName],
              let key = parts[2].stringValue, let count = parts[4].intValue, count >= 0
        else { throw fail("unexpected persistent id (expected a torch storage reference)") }
        guard count <= Int64(Int.max / dtype.byteSize) else { throw fail("storage '\(key)' claims \(count) elements, more bytes than any file") }
        return .storage(TorchStorage(dtype: dtype, key: key, count: Int(count)))
    }
}
